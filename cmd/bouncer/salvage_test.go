package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
	"github.com/bouncer/bouncer/store/storetest"
)

// damagedDatabase makes a database of n bounces in dir, damages it as
// the disk of issue 20 did (32 bytes at the start of every page from the
// third on) and returns a config naming it.
func damagedDatabase(t *testing.T, dir string, n int) (cfg string, sups int) {
	t.Helper()
	path := filepath.Join(dir, "bouncer.db")
	db, err := bolt.Open(path, bolt.Options{})
	tcheck(t, err, "open")
	for i := range n {
		d := storetest.Delivery(t, storetest.DSN(fmt.Sprintf("u%d@d%d.example", i, i%50), "5.1.1",
			fmt.Sprintf("Mon, 2 Feb 2026 00:%02d:%02d +0000", i/60%60, i%60)))
		_, err := db.Save(context.Background(), d)
		tcheck(t, err, "save")
	}
	for i := range 100 {
		tcheck(t, db.AddSuppression(store.Suppression{Address: fmt.Sprintf("s%d@d%d.example", i, i%9), Reason: "test", Source: "test"}), "suppress")
	}
	tcheck(t, db.Suppressions("", func(store.Suppression) error { sups++; return nil }), "suppressions")
	tcheck(t, db.Close(), "close")
	data, err := os.ReadFile(path)
	tcheck(t, err, "read")
	for off := 2 * (16 << 10); off < len(data); off += 16 << 10 {
		for i := range 32 {
			data[off+i] = byte(0xA5 ^ i)
		}
	}
	tcheck(t, os.WriteFile(path, data, 0o600), "damage")
	return writeConfig(t, dir, "[http]\nlisten = \"\"\n[store]\npath = \"bouncer.db\"\n"), sups
}

// runApp runs a command in process and returns stdout, stderr and the
// exit code.
func runApp(args ...string) (string, string, int) {
	var out, errw bytes.Buffer
	a := &app{stdout: &out, stderr: &errw}
	err := a.run(context.Background(), args)
	code := exitCode(err, &errw)
	return out.String(), errw.String(), code
}

func TestDamagedDatabase(t *testing.T) {
	dir := t.TempDir()
	cfg, sups := damagedDatabase(t, dir, 300)

	// serve refuses with one line that says what to run.
	out, errs, code := runApp("serve", "-config", cfg)
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	if code != 1 || len(lines) != 1 || out != "" {
		t.Fatalf("serve: exit %d, stdout %q, stderr:\n%s\nwant exit 1 and one line", code, out, errs)
	}
	for _, want := range []string{"is damaged (page ", "run `bouncer check -config " + cfg + "`", "`bouncer salvage -config " + cfg + " --to NEW.db`", "backup"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("serve's line lacks %q:\n%s", want, lines[0])
		}
	}

	// check lists the damaged pages and exits 1, without a stack trace.
	out, errs, code = runApp("check", "-config", cfg)
	if code != 1 || !regexp.MustCompile(`(?m)^  page \d+`).MatchString(out) || strings.Contains(out+errs, "goroutine") {
		t.Fatalf("check: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if !strings.Contains(errs, "salvage") {
		t.Errorf("check does not say how to recover:\n%s", errs)
	}

	// salvage copies into a new file and says how many records it kept.
	newDB := filepath.Join(dir, "new.db")
	out, errs, code = runApp("salvage", "-config", cfg, "--to", newDB)
	if code != 0 {
		t.Fatalf("salvage: exit %d\n%s\n%s", code, out, errs)
	}
	t.Logf("salvage:\n%s", out)
	m := regexp.MustCompile(`(?m)^records\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no records row:\n%s", out)
	}
	kept, _ := strconv.Atoi(m[1])
	if kept < 250 {
		t.Errorf("kept %d of 300 records", kept)
	}
	if m := regexp.MustCompile(`(?m)^suppress\s+(\d+)`).FindStringSubmatch(out); m == nil || m[1] == "0" || sups == 0 {
		t.Errorf("suppressions: %d before, salvage kept %v", sups, m)
	}
	if _, _, code := runApp("salvage", "-config", cfg, "--to", newDB); code == 0 {
		t.Error("salvage onto an existing file succeeded")
	}

	// The copy checks clean and holds what the table says.
	newCfg := filepath.Join(t.TempDir(), "new.toml")
	tcheck(t, os.WriteFile(newCfg, fmt.Appendf(nil, "[http]\nlisten = \"\"\n[store]\npath = %q\n", newDB), 0o600), "config")
	if out, errs, code := runApp("check", "-config", newCfg); code != 0 {
		t.Fatalf("check of the copy: exit %d\n%s%s", code, out, errs)
	}
	if got := len(queryJSON(t, "-config", newCfg, "--limit", "10000")); got != kept {
		t.Errorf("the copy has %d records, salvage printed %d", got, kept)
	}
}
