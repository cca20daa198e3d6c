package api

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/bouncer/bouncer/store"
)

// Export formats. Suppressions take all three, bounces csv and json.
const (
	FormatCSV     = "csv"
	FormatJSON    = "json"    // one object per line
	FormatPostfix = "postfix" // an access(5) map
)

// ValidExportFormat reports whether format is one of what ("bounces" or
// "suppressions") can be written in.
func ValidExportFormat(what, format string) bool {
	switch format {
	case FormatCSV, FormatJSON:
		return what == "bounces" || what == "suppressions"
	case FormatPostfix:
		return what == "suppressions"
	}
	return false
}

// SuppressionHeader is the CSV header of a suppression export.
var SuppressionHeader = []string{"address", "status", "reason", "source", "created", "record_id"}

// BounceHeader is the CSV header of a bounce export.
var BounceHeader = []string{"id", "received", "recipient", "domain", "kind", "class", "status", "reason", "action", "remote_mta", "diagnostic", "verdict", "suppressed", "campaign"}

// WriteSuppressions writes the suppressions that each yields to w in
// format, one at a time: each is a walk such as a bolt.DB.Suppressions
// call.
func WriteSuppressions(w io.Writer, format string, each func(fn func(store.Suppression) error) error) error {
	switch format {
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return each(func(s store.Suppression) error { return enc.Encode(s) })
	case FormatCSV:
		cw := csv.NewWriter(w)
		cw.Write(SuppressionHeader)
		err := each(func(s store.Suppression) error {
			return cw.Write([]string{s.Address, s.Status, s.Reason, s.Source, s.Created.UTC().Format(time.RFC3339), s.RecordID})
		})
		cw.Flush()
		if err == nil {
			err = cw.Error()
		}
		return err
	case FormatPostfix:
		if _, err := io.WriteString(w, "# bouncer suppression list, Postfix access(5) map; build with: postmap FILE\n"); err != nil {
			return err
		}
		return each(func(s store.Suppression) error {
			if line := PostfixLine(s); line != "" {
				_, err := io.WriteString(w, line)
				return err
			}
			return nil
		})
	}
	return fmt.Errorf("export: format %q: want csv, json or postfix", format)
}

// PostfixLine renders one access(5) entry: the address as the lookup key
// (lower case, as Postfix folds keys of hash and btree maps), then REJECT
// with the enhanced status code (RFC 3463) when it is a permanent one and
// a one-line text. Addresses that cannot be a map key (whitespace, a
// leading #) give "".
func PostfixLine(s store.Suppression) string {
	addr := strings.ToLower(s.Address)
	if addr == "" || strings.HasPrefix(addr, "#") || strings.ContainsFunc(addr, isSpaceOrCtl) {
		return ""
	}
	code := "5.7.1"
	if st := s.Status; strings.HasPrefix(st, "5.") && !strings.ContainsFunc(st, isSpaceOrCtl) && len(st) <= 9 {
		code = st
	}
	text := strings.Join(strings.FieldsFunc(s.Reason, isSpaceOrCtl), " ")
	if len(text) > 200 {
		text = text[:200]
	}
	text = strings.ToValidUTF8(text, "?")
	return fmt.Sprintf("%s REJECT %s address suppressed by bouncer: %s\n", addr, code, text)
}

func isSpaceOrCtl(r rune) bool { return r <= ' ' || r == 0x7f }

// WriteBounces writes the records that each yields to w in format (csv or
// json), one at a time.
func WriteBounces(w io.Writer, format string, each func(fn func(store.Record) error) error) error {
	switch format {
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return each(func(r store.Record) error { return enc.Encode(r) })
	case FormatCSV:
		cw := csv.NewWriter(w)
		cw.Write(BounceHeader)
		err := each(func(r store.Record) error {
			return cw.Write([]string{r.ID, r.Received.UTC().Format(time.RFC3339Nano), r.Addr, r.Domain,
				string(r.Kind), string(r.Class), r.Status, string(r.Reason), string(r.Action), r.RemoteMTA,
				r.DiagnosticCode, r.Verdict, fmt.Sprint(r.Suppressed), r.Envelope.Campaign})
		})
		cw.Flush()
		if err == nil {
			err = cw.Error()
		}
		return err
	}
	return fmt.Errorf("export: format %q: want csv or json for bounces", format)
}

// ExportErrorTrailer is the HTTP trailer an export answer sets when the
// stream broke off after the headers went out; a client must treat a
// non-empty value (or a cut connection) as a failed export.
const ExportErrorTrailer = "X-Bouncer-Export-Error"

// exportWriteWindow is how long one write of an export may block: the
// server's WriteTimeout bounds a whole answer, too short for a large
// export, so exports renew their deadline as they make progress.
const exportWriteWindow = time.Minute

var exportTypes = map[string]string{
	FormatCSV: "text/csv; charset=utf-8", FormatJSON: "application/x-ndjson", FormatPostfix: "text/plain; charset=utf-8",
}

// export serves GET /v1/export/{what}?format=: the same streams as
// `bouncer export`, with the query filters for bounces (limit ignored).
func (h *Handler) export(w http.ResponseWriter, r *http.Request) {
	what, format := r.PathValue("what"), r.URL.Query().Get("format")
	if format == "" {
		format = FormatJSON
	}
	if what != "bounces" && what != "suppressions" {
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	if !ValidExportFormat(what, format) {
		writeError(w, http.StatusBadRequest, "format: want csv or json (or postfix for suppressions)")
		return
	}
	f, err := filterFrom(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f.Limit = 0
	w.Header().Set("Trailer", ExportErrorTrailer)
	dw := &deadlineWriter{w: w, rc: http.NewResponseController(w)}
	bw := bufio.NewWriterSize(dw, 32<<10)
	w.Header().Set("Content-Type", exportTypes[format])
	if what == "suppressions" {
		err = WriteSuppressions(bw, format, func(fn func(store.Suppression) error) error {
			return h.db.Suppressions(f.Domain, fn)
		})
	} else {
		err = WriteBounces(bw, format, func(fn func(store.Record) error) error {
			return h.db.ForEach(f, fn)
		})
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil && !dw.wrote {
		// Nothing went out yet: a plain error answer.
		h.fail(w, "exporting "+what, err)
		return
	}
	if err != nil {
		h.log.Error("exporting", "what", what, "err", err)
		w.Header().Set(ExportErrorTrailer, "export failed; see the server log")
	}
}

// deadlineWriter writes to w and pushes the connection's write deadline
// forward, at most once a second.
type deadlineWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	renewed time.Time
	wrote   bool
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if now := time.Now(); now.Sub(d.renewed) >= time.Second {
		d.renewed = now
		d.rc.SetWriteDeadline(now.Add(exportWriteWindow))
	}
	d.wrote = true
	return d.w.Write(p)
}
