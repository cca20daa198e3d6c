package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// testWriter sends what is written to t.Log, so a failing test shows its
// own server log.
type testWriter struct {
	t  testing.TB
	mu sync.Mutex
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// writeConfig writes a config file into dir and returns its path.
func writeConfig(t testing.TB, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "bouncer.toml")
	tcheck(t, os.WriteFile(p, []byte(body), 0o600), "writing config")
	return p
}

// testServer is a running "bouncer serve".
type testServer struct {
	smtpAddr, httpAddr string
	dir                string
	cliConfig          string // config for CLI commands: the server's store and API
	cancel             context.CancelFunc
	done               chan error
}

// newTestServer starts serve on loopback ports chosen by the kernel, with
// its database in a temp dir, and waits until it listens.
func newTestServer(t *testing.T, extra string) *testServer {
	t.Helper()
	return newTestServerWith(t, "", extra)
}

// newTestServerWith is newTestServer with more [smtp] keys.
func newTestServerWith(t *testing.T, smtpExtra, extra string) *testServer {
	t.Helper()
	dir := t.TempDir()
	return newTestServerConfig(t, writeConfig(t, dir, `
[smtp]
listen = "127.0.0.1:0"
hostname = "bouncer.test"
domains = ["localhost", "bounce.example.org"]
`+smtpExtra+`
[http]
listen = "127.0.0.1:0"
[store]
path = "bouncer.db"
`+extra))
}

// newTestServerConfig starts serve with the config file cfg, whose SMTP and
// HTTP listeners must be on port 0 of loopback.
func newTestServerConfig(t *testing.T, cfg string) *testServer {
	t.Helper()
	dir := filepath.Dir(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]string, 1)
	a := &app{stdout: &testWriter{t: t}, stderr: &testWriter{t: t}, onReady: func(s, h net.Addr) {
		httpAddr := ""
		if h != nil {
			httpAddr = h.String()
		}
		ready <- [2]string{s.String(), httpAddr}
	}}
	ts := &testServer{dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- a.run(ctx, []string{"serve", "-config", cfg}) }()
	select {
	case addrs := <-ready:
		ts.smtpAddr, ts.httpAddr = addrs[0], addrs[1]
	case err := <-ts.done:
		cancel()
		t.Fatalf("serve stopped before listening: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("serve did not listen within 30s")
	}
	ts.cliConfig = writeConfig(t, t.TempDir(), fmt.Sprintf(`
[http]
listen = %q
[store]
path = %q
`, ts.httpAddr, filepath.Join(dir, "bouncer.db")))
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop shuts the server down and checks that serve returned nil.
func (ts *testServer) stop(t testing.TB) {
	t.Helper()
	if ts.cancel == nil {
		return
	}
	ts.cancel()
	ts.cancel = nil
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("serve returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("serve did not stop within 30s")
	}
}

// deliver sends the file testdata/name from the null sender to rcpt.
func deliver(t testing.TB, addr, rcpt string, msg []byte) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.SendMail("", []string{rcpt}, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	tcheck(t, err, "reading testdata")
	return b
}

// runCLI runs a command and returns its stdout and exit code.
func runCLI(t testing.TB, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	errw := &testWriter{t: t}
	a := &app{stdout: &out, stderr: errw}
	err := a.run(context.Background(), args)
	return out.String(), exitCode(err, errw)
}

func queryJSON(t testing.TB, args ...string) []store.Record {
	t.Helper()
	return cliJSON[store.Record](t, append([]string{"query", "--json"}, args...)...)
}

// cliJSON runs a command that prints JSON lines and decodes them.
func cliJSON[T any](t testing.TB, args ...string) []T {
	t.Helper()
	out, code := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("bouncer %v: exit %d", args, code)
	}
	var items []T
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var it T
		tcheck(t, dec.Decode(&it), "decoding the output of bouncer "+args[0])
		items = append(items, it)
	}
	return items
}

func TestExampleConfigIsTheDefault(t *testing.T) {
	// config.example.toml must list every key with its default: decoded
	// strictly, it must give exactly defaultConfig(), and every key of
	// the struct must appear in it.
	got, err := loadConfig("../../config.example.toml")
	tcheck(t, err, "loading config.example.toml")
	want := defaultConfig()
	want.Store.Path = filepath.Join("../..", want.Store.Path)
	want.file = "../../config.example.toml" // where it was read from, for hints
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("config.example.toml differs from defaultConfig():\n got %+v\nwant %+v", got, want)
	}
	example, err := os.ReadFile("../../config.example.toml")
	tcheck(t, err, "reading example")
	for _, key := range tomlKeys(reflect.TypeOf(Config{}), "") {
		if strings.HasPrefix(key, "[[") {
			if !strings.Contains(string(example), "\n"+key+"\n") {
				t.Errorf("config.example.toml does not list %s", key)
			}
			continue
		}
		i := strings.LastIndex(key, ".")
		section, name := key[:i], key[i+1:]
		listed := strings.Contains(string(example), "\n"+name+" = ")
		if deprecatedKeys[key] {
			// Read so that old files load, but ignored: the example
			// must not offer it, set or commented out.
			if listed || strings.Contains(string(example), "\n# "+name+" = ") {
				t.Errorf("config.example.toml offers %s, which is ignored", key)
			}
			continue
		}
		if optionalKeys[key] {
			// A key whose default depends on other keys is shown
			// commented out, so that copying the file leaves it unset.
			listed = strings.Contains(string(example), "\n# "+name+" = ")
		}
		if !strings.Contains(string(example), "["+section+"]") || !listed {
			t.Errorf("config.example.toml does not list %s", key)
		}
	}
}

// optionalKeys are pointer fields, unset by default.
var optionalKeys = map[string]bool{"verp.required": true}

// deprecatedKeys are keys still read, so that old config files load,
// but ignored with a warning (Config.warnings): not in the example.
var deprecatedKeys = map[string]bool{"store.commit_interval": true}

// tomlKeys lists "section.key" for every leaf field of Config.
func tomlKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if !f.IsExported() {
			continue // not read from the file
		}
		name := f.Tag.Get("toml")
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct && f.Type.Elem().Name() == "Rule" {
			keys = append(keys, "[["+prefix+name+"]]")
			continue
		}
		if f.Type == reflect.TypeFor[[]MailboxConfig]() {
			continue // commented out in the example: TestExampleMailbox
		}
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, tomlKeys(f.Type, prefix+name+".")...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown key", "[smtp]\nlisten_addr = \"x\"\n", "listen_addr"},
		{"any domain off loopback", "[smtp]\nlisten = \"0.0.0.0:25\"\n", "smtp.domains is empty"},
		{"bad duration", "[smtp]\nread_timeout = \"soon\"\n", "read_timeout"},
		{"zero limit", "[smtp]\nmax_recipients = 0\n", "smtp.max_recipients = 0: want 1 to 1000"},
		{"open API off loopback", "[http]\nlisten = \"192.0.2.1:8025\"\n", "http.tokens"},
		{"bad level", "[log]\nlevel = \"loud\"\n", ""},
		{"bad relay", "[smtp]\ntrusted_relays = [\"10.0.0.0/33\"]\n", "smtp.trusted_relays"},
		{"byte rate below message size", "[smtp]\nbyte_rate = 1048576\nmax_message_bytes = 2097152\n", "smtp.byte_rate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, t.TempDir(), tc.body)
			_, err := loadConfig(p)
			if tc.want == "" {
				return // checked when the logger is built, see TestServeRefusesBadLevel
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	// A non-loopback listener is fine once domains and keys are set.
	p := writeConfig(t, t.TempDir(), "[smtp]\nlisten = \"0.0.0.0:25\"\ndomains = [\"bounce.example.org\"]\n"+
		"[verp]\nkeys = [{ id = \"a\", secret = \"0123456789abcdef0123\" }]\n")
	_, err := loadConfig(p)
	tcheck(t, err, "config with domains")
}

func TestServeRefusesBadLevel(t *testing.T) {
	p := writeConfig(t, t.TempDir(), "[log]\nlevel = \"loud\"\n[store]\npath = \"x.db\"\n")
	_, code := runCLI(t, "serve", "-config", p)
	if code == 0 {
		t.Fatal("serve started with log.level = loud")
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"24h":                  now.Add(-24 * time.Hour),
		"7d":                   now.AddDate(0, 0, -7),
		"2026-11-20T10:00:00Z": time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC),
		// as the tables print it
		"2026-11-20 11:00:00 +01:00": time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		tcheck(t, err, in)
		if !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, want %v", in, got, want)
		}
	}
	if _, err := parseSince("yesterday", now); err == nil {
		t.Error("parseSince(yesterday) gave no error")
	}
}

func TestServeEndToEnd(t *testing.T) {
	ts := newTestServer(t, "")

	// A Postfix DSN with Status 5.4.3 to a VERP return path, and an
	// Exim DSN that says Status 5.0.0 with 550 5.4.3 in Diagnostic-Code.
	tcheck(t, deliver(t, ts.smtpAddr, "bounces+user=dead.test@localhost", readTestdata(t, "postfix-543.eml")), "delivering postfix DSN")
	tcheck(t, deliver(t, ts.smtpAddr, "bounces+other=dead.test@localhost", readTestdata(t, "exim-500.eml")), "delivering exim DSN")

	// A foreign domain is refused before DATA.
	err := deliver(t, ts.smtpAddr, "bounces+x=dead.test@elsewhere.example", readTestdata(t, "exim-500.eml"))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("foreign domain: got %v, want 550 5.7.1", err)
	}

	// The query commands read through the running server's API.
	recs := queryJSON(t, "-config", ts.cliConfig, "--status", "5.4.3")
	got := map[string]store.Record{}
	for _, r := range recs {
		got[r.Addr] = r
	}
	if len(recs) != 2 {
		t.Fatalf("query --status 5.4.3 gave %d records, want 2: %+v", len(recs), recs)
	}
	pf := got["user@dead.test"]
	if pf.Status != "5.4.3" || pf.Kind != "bounce" || pf.Class != "hard" || !pf.Suppressed ||
		pf.RemoteMTA != "relay.dead.test" || pf.ReportingMTA != "mx.example.net" || pf.Envelope.VERP != "user@dead.test" {
		t.Errorf("postfix record: %+v", pf)
	}
	if pf.Original == nil || pf.Original.MessageID != "<campaign-7.user@sender.example.org>" && pf.Original.MessageID != "campaign-7.user@sender.example.org" {
		t.Errorf("postfix record lost the returned Message-ID: %+v", pf.Original)
	}
	ex := got["other@dead.test"]
	if ex.Status != "5.4.3" || ex.StatusLiteral != "5.0.0" || !ex.Suppressed {
		t.Errorf("exim record: status %q literal %q suppressed %v", ex.Status, ex.StatusLiteral, ex.Suppressed)
	}

	for addr, want := range map[string]int{"user@dead.test": 0, "other@dead.test": 0, "alive@dead.test": 1} {
		if out, code := runCLI(t, "suppressed", "-config", ts.cliConfig, addr); code != want {
			t.Errorf("suppressed %s: exit %d (%q), want %d", addr, code, out, want)
		}
	}

	out, code := runCLI(t, "domains", "-config", ts.cliConfig, "--json")
	if code != 0 || !strings.Contains(out, `"domain":"dead.test"`) || !strings.Contains(out, "relay.dead.test") {
		t.Errorf("domains: exit %d, output %s", code, out)
	}

	// Once the server has stopped, the same commands read the file.
	ts.stop(t)
	recs = queryJSON(t, "-config", ts.cliConfig, "--domain", "dead.test")
	if len(recs) != 2 {
		t.Fatalf("query from the file after stop gave %d records, want 2", len(recs))
	}
	if _, code := runCLI(t, "suppressed", "-config", ts.cliConfig, "user@dead.test"); code != 0 {
		t.Errorf("suppressed from the file: exit %d, want 0", code)
	}
}

// heldDatabase opens a database in this process, as a running server
// would hold it, and returns a config naming it with an admin API address
// where nothing answers.
func heldDatabase(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "bouncer.db"), bolt.Options{})
	tcheck(t, err, "opening store")
	t.Cleanup(func() { db.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "reserving a port")
	deadAPI := l.Addr().String()
	l.Close()
	return writeConfig(t, dir, fmt.Sprintf("[http]\nlisten = %q\n[store]\npath = \"bouncer.db\"\nlock_timeout = \"200ms\"\n", deadAPI))
}

func TestQueryWhileDatabaseHeld(t *testing.T) {
	// Another process (here: this one) holds the file and no API answers:
	// the query must fail quickly with a clear message, not hang.
	cfg := heldDatabase(t)
	var stderr bytes.Buffer
	a := &app{stdout: &bytes.Buffer{}, stderr: &stderr}
	err := a.run(context.Background(), []string{"query", "-config", cfg})
	if err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("got %v, want a 'busy' error", err)
	}
}

func TestParseCommand(t *testing.T) {
	out, code := runCLI(t, "parse", "--json", "testdata/exim-500.eml", "testdata/mbox-0")
	if code != 0 {
		t.Fatalf("parse: exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 {
		t.Fatalf("parse printed %d lines, want the exim record and the mbox's messages", len(lines))
	}
	var first map[string]any
	tcheck(t, json.Unmarshal([]byte(lines[0]), &first), "decoding first line")
	for k, want := range map[string]any{
		"file": "testdata/exim-500.eml", "recipient": "other@dead.test", "status": "5.4.3",
		"status_literal": "5.0.0", "action": "failed", "remote_mta": "relay.dead.test",
		"reporting_mta": "mx.example.com", "kind": "bounce", "class": "hard",
	} {
		if first[k] != want {
			t.Errorf("%s = %v, want %v", k, first[k], want)
		}
	}
	for _, k := range []string{"diagnostic_code", "decoded_by", "reason"} {
		if s, _ := first[k].(string); s == "" {
			t.Errorf("%s is empty", k)
		}
	}
	mboxLines := 0
	for _, l := range lines[1:] {
		if strings.Contains(l, `"file":"testdata/mbox-0"`) {
			mboxLines++
		}
	}
	if mboxLines < 2 {
		t.Errorf("mbox-0 gave %d lines, want one per message at least", mboxLines)
	}

	// A message that is not a bounce prints one line with its kind, an
	// empty recipient, and decoded_by "none".
	out, code = runCLI(t, "parse", "--json", "../../parse/testdata/sisimai/maildir/not/is-not-bounce-02.eml")
	var none map[string]any
	if code != 0 || json.Unmarshal([]byte(strings.TrimSpace(out)), &none) != nil ||
		none["recipient"] != "" || none["kind"] != "unknown" || none["decoded_by"] != "none" {
		t.Errorf("parse of a non-bounce: exit %d, %s", code, out)
	}

	if _, code := runCLI(t, "parse", "testdata/does-not-exist.eml"); code != 1 {
		t.Errorf("parse of a missing file: exit %d, want 1", code)
	}
	if _, code := runCLI(t, "parse"); code != 2 {
		t.Errorf("parse without files: exit %d, want 2", code)
	}
}

func TestHelpAndUsage(t *testing.T) {
	for _, cmd := range []string{"serve", "parse", "query", "suppressed", "domains", "reclassify"} {
		if _, code := runCLI(t, cmd, "--help"); code != 0 {
			t.Errorf("%s --help: exit %d", cmd, code)
		}
	}
	if _, code := runCLI(t, "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	if _, code := runCLI(t, "query", "--limit", "x"); code != 2 {
		t.Errorf("bad flag: exit %d, want 2", code)
	}
}

func TestConfigDataMemoryFitsLargestMessage(t *testing.T) {
	p := writeConfig(t, t.TempDir(), "[smtp]\nmax_message_bytes = 20971520\n")
	if _, err := loadConfig(p); err == nil || !strings.Contains(err.Error(), "max_data_memory") {
		t.Fatalf("a 20 MiB message limit with the 24 MiB default budget: got %v, want an error about max_data_memory", err)
	}
	p = writeConfig(t, t.TempDir(), "[smtp]\nmax_message_bytes = 20971520\nmax_data_memory = 67108864\n")
	_, err := loadConfig(p)
	tcheck(t, err, "a budget that fits")
}
