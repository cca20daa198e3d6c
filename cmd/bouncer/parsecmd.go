package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/bouncer/bouncer/parse"
)

// parseLine is one line of "bouncer parse --json": one recipient record of
// one message of one file. Acceptance checks rely on these names.
type parseLine struct {
	File               string `json:"file"`
	Message            int    `json:"message,omitempty"` // 1-based index in an mbox file
	Addr               string `json:"recipient"`
	ReportingMTA       string `json:"reporting_mta"`
	OriginalEnvelopeID string `json:"original_envelope_id,omitempty"`
	parse.Recipient
	Original *parse.Original `json:"original,omitempty"`
	Feedback *parse.Feedback `json:"feedback,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// maxParseFileBytes caps one message read by "bouncer parse".
const maxParseFileBytes = 64 << 20

func (a *app) parseCmd(args []string) error {
	fs := newFlags("parse", "parse [--json] FILE...", a.stderr)
	asJSON := fs.Bool("json", false, "print one JSON object per recipient record")
	files, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return usageError("parse: no FILE given")
	}
	out := bufio.NewWriter(a.stdout)
	defer out.Flush()
	var emit func(parseLine) error
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		emit = func(l parseLine) error { return enc.Encode(l) }
	} else {
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		defer tw.Flush()
		fmt.Fprintln(tw, "FILE\tRECIPIENT\tKIND\tCLASS\tSTATUS\tACTION\tREASON\tREMOTE-MTA\tDECODED-BY")
		emit = func(l parseLine) error {
			_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.File, dash(l.Addr),
				l.Kind, l.Class, dash(l.Status), dash(string(l.Action)), dash(string(l.Reason)), dash(l.RemoteMTA), dash(l.DecodedBy))
			return err
		}
	}
	var failed int
	for _, name := range files {
		if err := parseFile(name, emit); err != nil {
			fmt.Fprintf(a.stderr, "bouncer: parse %s: %v\n", name, err)
			failed++
		}
	}
	if failed > 0 {
		return &exitError{code: 1}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseFile decodes one file, splitting it when it is an mbox.
func parseFile(name string, emit func(parseLine) error) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	head, _ := br.Peek(5)
	if !bytes.Equal(head, []byte("From ")) {
		data, err := io.ReadAll(io.LimitReader(br, maxParseFileBytes+1))
		if err != nil {
			return err
		}
		if len(data) > maxParseFileBytes {
			return fmt.Errorf("larger than %d bytes", maxParseFileBytes)
		}
		return emitReport(name, 0, data, emit)
	}
	n := 0
	return parse.SplitMbox(br, func(msg []byte) error {
		n++
		return emitReport(name, n, msg, emit)
	})
}

func emitReport(name string, index int, msg []byte, emit func(parseLine) error) error {
	rep, err := parse.Message(bytes.NewReader(msg), parse.Limits{})
	base := parseLine{File: name, Message: index}
	if err != nil && !errors.Is(err, parse.ErrNotBounce) {
		base.Error = err.Error()
	}
	// A message with no recipient record says so in decoded_by, so every
	// line names what decoded it.
	base.DecodedBy = "none"
	if rep == nil {
		base.Kind, base.Class = parse.KindUnknown, parse.ClassNone
		return emit(base)
	}
	base.ReportingMTA = rep.ReportingMTA
	base.OriginalEnvelopeID = rep.OriginalEnvelopeID
	base.Original = rep.Original
	base.Feedback = rep.Feedback
	if len(rep.Recipients) == 0 {
		base.Kind, base.Class = rep.Kind, parse.ClassNone
		return emit(base)
	}
	for _, r := range rep.Recipients {
		l := base
		l.Recipient = r
		l.Addr = r.Address()
		if err := emit(l); err != nil {
			return err
		}
	}
	return nil
}
