package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/bouncer/bouncer/api"
)

// queryLoop asks the server something every queryEvery: a page of
// records, the recent domains or one address through the API, and every
// fifth time the same through the CLI (which goes through the API).
func (s *soak) queryLoop(ctx context.Context) {
	t := time.NewTicker(s.o.queryEvery)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		addr := s.in.recentAddr(i)
		var err error
		if i%5 == 4 {
			err = s.cliQuery(ctx, i/5, addr)
		} else {
			err = s.apiQuery(i, addr)
		}
		s.mu.Lock()
		s.queries++
		s.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			s.queryErrs.add("query", err)
		}
	}
}

func (s *soak) apiQuery(i int, addr string) error {
	path := "/v1/bounces?limit=20"
	switch {
	case i%3 == 1:
		path = "/v1/domains?limit=50"
	case i%3 == 2 && addr != "":
		path = "/v1/suppressions/" + url.PathEscape(addr)
	}
	resp, err := s.hc.Get(s.api + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK && !(resp.StatusCode == http.StatusNotFound && strings.HasPrefix(path, "/v1/suppressions/")) {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	if !json.Valid(body) && !strings.HasPrefix(path, "/v1/suppressions/") {
		return fmt.Errorf("GET %s: the answer is not JSON", path)
	}
	return nil
}

func (s *soak) cliQuery(ctx context.Context, i int, addr string) error {
	args := []string{"query", "-config", s.cfgPath, "--limit", "20"}
	okCodes := []int{0}
	switch {
	case i%3 == 1:
		args = []string{"domains", "-config", s.cfgPath, "--limit", "20"}
	case i%3 == 2 && addr != "":
		args, okCodes = []string{"suppressed", "-config", s.cfgPath, addr}, []int{0, 1}
	}
	cmd := exec.CommandContext(ctx, s.o.bouncer, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		return fmt.Errorf("bouncer %s: %w", args[0], err)
	}
	for _, c := range okCodes {
		if c == code {
			return nil
		}
	}
	return fmt.Errorf("bouncer %s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(out.String()))
}

// exportLoop exports every exportEvery through the CLI, the records as
// CSV and the suppression list as JSON in turn. The records exported must
// include every record of a message answered 250 before the export began.
func (s *soak) exportLoop(ctx context.Context) {
	t := time.NewTicker(s.o.exportEvery)
	defer t.Stop()
	lastSupp := 0
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		want := int64(s.seeded) + s.in.records.Load()
		var err error
		var rows int
		if i%2 == 0 {
			rows, err = s.export(ctx, "bounces", "csv")
			if err == nil && int64(rows) < want {
				err = fmt.Errorf("export bounces: %d rows, but %d records were acknowledged before it began", rows, want)
			}
		} else {
			rows, err = s.export(ctx, "suppressions", "json")
			if err == nil && rows < lastSupp {
				err = fmt.Errorf("export suppressions: %d entries, fewer than the %d of the last export", rows, lastSupp)
			}
			lastSupp = max(lastSupp, rows)
		}
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.exports++
		s.exportedRows = rows
		s.mu.Unlock()
		if err != nil {
			s.exportErrs.add("export", err)
		}
	}
}

// export runs bouncer export WHAT --format FORMAT and counts what it
// wrote: CSV records less the header, or JSON lines.
func (s *soak) export(ctx context.Context, what, format string) (int, error) {
	cmd := exec.CommandContext(ctx, s.o.bouncer, "export", what, "-config", s.cfgPath, "--format", format)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n, cerr := countRows(out, format)
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("bouncer export %s: %w: %s", what, err, strings.TrimSpace(stderr.String()))
	}
	if cerr != nil {
		return 0, fmt.Errorf("reading bouncer export %s: %w", what, cerr)
	}
	return n, nil
}

func countRows(r io.Reader, format string) (int, error) {
	n := 0
	if format == "csv" {
		cr := csv.NewReader(bufio.NewReaderSize(r, 64<<10))
		cr.FieldsPerRecord = -1
		cr.ReuseRecord = true
		for {
			_, err := cr.Read()
			if err == io.EOF {
				return max(n-1, 0), nil
			}
			if err != nil {
				return n, err
			}
			n++
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if !json.Valid(sc.Bytes()) {
			return n, fmt.Errorf("line %d is not JSON", n+1)
		}
		n++
	}
	return n, sc.Err()
}

// accounting is what the final export says about the soak's messages.
type accounting struct {
	seedRecords, records, messages int   // soak records and their distinct messages
	wantRecords, wantMessages      int64 // from the 250s
	duplicates, mismatches         int
	wantEvents, missingEvents      int
	missing                        []string // a few record ids whose push never came
	strayEvents                    int      // events for records the export lacks
}

func (a accounting) String() string {
	return fmt.Sprintf("%d messages answered 250 have %d stored messages; %d records expected, %d stored (%d duplicates, %d mismatches; seed %d); %d records wanted a push, %d missing, %d pushes for unknown records",
		a.wantMessages, a.messages, a.wantRecords, a.records, a.duplicates, a.mismatches, a.seedRecords, a.wantEvents, a.missingEvents, a.strayEvents)
}

func (a accounting) problems() []string {
	var out []string
	if int64(a.messages) != a.wantMessages {
		out = append(out, fmt.Sprintf("lost or extra messages: %d answered 250, %d stored", a.wantMessages, a.messages))
	}
	if int64(a.records) != a.wantRecords {
		out = append(out, fmt.Sprintf("lost or extra records: %d expected, %d stored", a.wantRecords, a.records))
	}
	if a.missingEvents > 0 {
		out = append(out, fmt.Sprintf("%d pushes never arrived, e.g. for records %s", a.missingEvents, strings.Join(a.missing, ", ")))
	}
	if a.strayEvents > 0 {
		out = append(out, fmt.Sprintf("%d pushes for records the export lacks", a.strayEvents))
	}
	return out
}

// exported is the part of an exported record the accounting reads.
type exported struct {
	ID       string `json:"id"`
	MsgID    string `json:"msg_id"`
	Addr     string `json:"recipient"`
	Envelope struct {
		Helo string `json:"helo"`
	} `json:"envelope"`
	Kind       string `json:"kind"`
	Class      string `json:"class"`
	Suppressed bool   `json:"suppressed"`
	Duplicate  bool   `json:"duplicate"`
	Mismatch   string `json:"mismatch"`
}

// wantsPush says whether the soak's target (all four event types) gets an
// event for the record: the rule of store's events() for such a target.
func (r *exported) wantsPush() bool {
	if r.Duplicate || r.Mismatch != "" || !strings.Contains(r.Addr, "@") {
		return false
	}
	typed := r.Kind == "complaint" || (r.Kind == "bounce" && (r.Class == "hard" || r.Class == "soft")) ||
		(r.Kind == "delay" && r.Class == "soft")
	return typed || r.Suppressed
}

// account reads every record through the API's JSON export and checks it
// against the 250s and the pushes received.
func (s *soak) account(w io.Writer) (accounting, error) {
	a := accounting{wantRecords: s.in.records.Load(), wantMessages: s.in.accepted.Load()}
	resp, err := s.hc.Get(s.api + "/v1/export/bounces?format=json")
	if err != nil {
		return a, fmt.Errorf("final export: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return a, fmt.Errorf("final export: %s", resp.Status)
	}
	msgs := map[string]bool{}
	ids := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var r exported
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return a, fmt.Errorf("final export: record %d: %w", a.records+a.seedRecords+1, err)
		}
		if r.Envelope.Helo == seedHelo {
			a.seedRecords++
			continue
		}
		a.records++
		msgs[r.MsgID] = true
		ids[r.ID] = true
		if r.Duplicate {
			a.duplicates++
		}
		if r.Mismatch != "" {
			a.mismatches++
		}
		if r.wantsPush() {
			a.wantEvents++
			if !s.rv.hasRecord(r.ID) {
				a.missingEvents++
				if len(a.missing) < 5 {
					a.missing = append(a.missing, r.ID)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return a, fmt.Errorf("final export: %w", err)
	}
	if e := resp.Trailer.Get(api.ExportErrorTrailer); e != "" {
		return a, fmt.Errorf("final export broke off: %s", e)
	}
	a.messages = len(msgs)
	s.rv.mu.Lock()
	for id := range s.rv.records {
		if !ids[id] {
			a.strayEvents++
		}
	}
	s.rv.mu.Unlock()
	if a.seedRecords != s.seeded {
		return a, fmt.Errorf("final export: %d seeded records, %d were stored", a.seedRecords, s.seeded)
	}
	fmt.Fprintf(w, "final export: %s records in all\n", strconv.Itoa(a.records+a.seedRecords))
	return a, nil
}
