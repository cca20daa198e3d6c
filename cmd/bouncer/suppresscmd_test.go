package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/bouncer/bouncer/store"
)

// suppressionsJSON runs "suppress list --json" with args.
func suppressionsJSON(t *testing.T, args ...string) map[string]store.Suppression {
	t.Helper()
	out, code := runCLI(t, append([]string{"suppress", "list", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("suppress list %v: exit %d", args, code)
	}
	m := map[string]store.Suppression{}
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var s store.Suppression
		tcheck(t, dec.Decode(&s), "decoding suppress list")
		m[s.Address] = s
	}
	return m
}

func TestSuppressCommands(t *testing.T) {
	for _, running := range []bool{true, false} {
		name := "file"
		if running {
			name = "api"
		}
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, "")
			cfg := ts.cliConfig
			tcheck(t, deliver(t, ts.smtpAddr, "bounces+user=dead.test@localhost", readTestdata(t, "postfix-543.eml")), "delivering DSN")
			if !running {
				// Without a server the commands open the file; with one,
				// the file is locked and only the API can succeed.
				ts.stop(t)
			}

			if out, code := runCLI(t, "suppress", "add", "-config", cfg, "Manual@Example.COM", "--reason", "asked us"); code != 0 || !strings.Contains(out, "Manual@example.com") {
				t.Fatalf("suppress add: exit %d %q", code, out)
			}
			if _, code := runCLI(t, "suppress", "add", "-config", cfg, "<Manual@example.com>"); code != 1 {
				t.Errorf("suppress add of a listed address: exit %d, want 1", code)
			}
			if _, code := runCLI(t, "suppress", "add", "-config", cfg, "no-at-sign"); code != 1 {
				t.Errorf("suppress add of an invalid address: exit %d, want 1", code)
			}
			out, code := runCLI(t, "suppressed", "-config", cfg, "Manual@example.com")
			if code != 0 || !strings.Contains(out, "asked us") || !strings.Contains(out, "(manual)") {
				t.Errorf("suppressed: exit %d %q", code, out)
			}

			all := suppressionsJSON(t, "-config", cfg)
			if len(all) != 2 {
				t.Fatalf("suppress list: %d entries, want 2: %+v", len(all), all)
			}
			auto := all["user@dead.test"]
			if auto.Source != "policy" || auto.Status != "5.4.3" || auto.RecordID == "" || !strings.Contains(auto.Reason, "5.4.3") {
				t.Errorf("policy entry: %+v", auto)
			}
			if m := suppressionsJSON(t, "-config", cfg, "--domain", "DEAD.test"); len(m) != 1 || m["user@dead.test"].RecordID != auto.RecordID {
				t.Errorf("suppress list --domain: %+v", m)
			}
			out, code = runCLI(t, "suppress", "list", "-config", cfg)
			if code != 0 || !strings.Contains(out, auto.RecordID) || !strings.Contains(out, "asked us") {
				t.Errorf("suppress list table: exit %d\n%s", code, out)
			}

			if _, code := runCLI(t, "suppress", "remove", "-config", cfg, "Manual@example.com"); code != 0 {
				t.Errorf("suppress remove: exit %d", code)
			}
			if _, code := runCLI(t, "suppressed", "-config", cfg, "Manual@example.com"); code != 1 {
				t.Errorf("suppressed after remove: exit %d, want 1", code)
			}
			if _, code := runCLI(t, "suppress", "remove", "-config", cfg, "Manual@example.com"); code != 1 {
				t.Errorf("second suppress remove: exit %d, want 1", code)
			}
			if _, code := runCLI(t, "suppress", "frobnicate", "-config", cfg); code != 2 {
				t.Errorf("unknown subcommand: exit %d, want 2", code)
			}
		})
	}
}

func TestStormCommands(t *testing.T) {
	ts := newTestServer(t, "[storm]\nthreshold = 2\nwindow = \"1h\"\n")
	cfg := ts.cliConfig
	send := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			rcpt := fmt.Sprintf("bounces+u%d=dead.test@localhost", i)
			// The report must name the VERP address, else it is a mismatch.
			msg := bytes.ReplaceAll(readTestdata(t, "postfix-543.eml"), []byte("user@dead.test"), fmt.Appendf(nil, "u%d@dead.test", i))
			tcheck(t, deliver(t, ts.smtpAddr, rcpt, msg), "delivering DSN")
		}
	}
	suppressed := func(addr string) bool {
		t.Helper()
		_, code := runCLI(t, "suppressed", "-config", cfg, addr)
		return code == 0
	}

	// Five addresses of one domain with 5.4.3: two are suppressed, the
	// third starts a storm and it and the rest are held.
	send(0, 5)
	for i := range 5 {
		if got := suppressed(fmt.Sprintf("u%d@dead.test", i)); got != (i < 2) {
			t.Errorf("u%d suppressed %v", i, got)
		}
	}
	if recs := queryJSON(t, "-config", cfg, "--recipient", "u4@dead.test"); len(recs) != 1 || recs[0].Verdict != store.ActionHeld || recs[0].Suppressed {
		t.Errorf("held record: %+v", recs)
	}
	out, code := runCLI(t, "storm", "list", "-config", cfg, "--json")
	var st store.Storm
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Domain != "dead.test" || st.Status != "5.4.3" || st.Held != 3 {
		t.Fatalf("storm list: exit %d %q", code, out)
	}
	if out, _ := runCLI(t, "domains", "-config", cfg, "--wide"); !strings.Contains(out, "5.4.3 held 3") {
		t.Errorf("domains does not show the storm:\n%s", out)
	}
	out, code = runCLI(t, "storm", "holds", "-config", cfg, "dead.test")
	if code != 0 || strings.Count(out, "@dead.test") != 3 {
		t.Errorf("storm holds: exit %d\n%s", code, out)
	}

	out, code = runCLI(t, "storm", "release", "-config", cfg, "dead.test")
	if code != 0 || !strings.Contains(out, "3 held") {
		t.Fatalf("storm release: exit %d %q", code, out)
	}
	out, code = runCLI(t, "suppressed", "-config", cfg, "u4@dead.test")
	if code != 0 || !strings.Contains(out, "policy (released)") {
		t.Errorf("after release: exit %d %q", code, out)
	}
	if out, _ := runCLI(t, "storm", "list", "-config", cfg, "--json"); out != "" {
		t.Errorf("storm list after release: %q", out)
	}

	// A new storm, dropped from the file once the server has stopped.
	send(5, 8)
	ts.stop(t)
	out, code = runCLI(t, "storm", "drop", "-config", cfg, "dead.test")
	if code != 0 || !strings.Contains(out, "1 held") {
		t.Fatalf("storm drop: exit %d %q", code, out)
	}
	for i := 5; i < 8; i++ {
		if got := suppressed(fmt.Sprintf("u%d@dead.test", i)); got != (i < 7) {
			t.Errorf("u%d suppressed %v after drop", i, got)
		}
	}
	if _, code := runCLI(t, "storm", "drop", "-config", cfg, "dead.test"); code != 1 {
		t.Errorf("second drop: exit %d, want 1", code)
	}
}
