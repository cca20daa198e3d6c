package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/verp"
)

func TestVerpSignVerify(t *testing.T) {
	cfg := writeConfig(t, t.TempDir(), `
[smtp]
domains = ["bounce.example.org"]
[verp]
keys = [{ id = "a", secret = "0123456789abcdef0123" }]
`)
	out, code := runCLI(t, "verp", "sign", "-config", cfg, "--recipient", "User@Example.com", "--campaign", "c7")
	if code != 0 {
		t.Fatalf("verp sign: exit %d", code)
	}
	addr := strings.TrimSpace(out)
	if !strings.HasSuffix(addr, "@bounce.example.org") || !strings.HasPrefix(addr, "bounces+") {
		t.Fatalf("verp sign printed %q", addr)
	}
	local, _, _ := strings.Cut(addr, "@")
	if len(local) > 64 {
		t.Errorf("local part is %d octets, more than RFC 5321 allows", len(local))
	}
	out, code = runCLI(t, "verp", "verify", "-config", cfg, addr)
	if code != 0 || !strings.Contains(strings.ToLower(out), "user@example.com") || !strings.Contains(out, "c7") {
		t.Errorf("verify of a fresh token: exit %d\n%s", code, out)
	}
	// MTAs may fold case: still valid.
	if _, code = runCLI(t, "verp", "verify", "-config", cfg, strings.ToUpper(addr)); code != 0 {
		t.Errorf("verify of the upper-cased token: exit %d, want 0", code)
	}
	tampered := strings.Replace(addr, "=c7=", "=c8=", 1)
	if _, code = runCLI(t, "verp", "verify", "-config", cfg, tampered); code != 1 {
		t.Errorf("verify of a tampered token: exit %d, want 1", code)
	}
	// Without keys, signing is a clear error.
	if _, code = runCLI(t, "verp", "sign", "--recipient", "u@example.com", "--domain", "b.example"); code != 1 {
		t.Errorf("verp sign without keys: exit %d, want 1", code)
	}
}

// TestRequiredSigning runs serve with signed return paths mandatory: a
// plain VERP address is refused at RCPT, a forged DSN to a non-VERP local
// part is stored but suppresses nothing, and a DSN to a valid signed token
// suppresses its recipient.
func TestRequiredSigning(t *testing.T) {
	ts := newTestServer(t, `
[verp]
keys = [{ id = "a", secret = "0123456789abcdef0123" }]
required = true
`)
	dsn := readTestdata(t, "postfix-543.eml")
	err := deliver(t, ts.smtpAddr, "bounces+user=dead.test@localhost", dsn)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("plain VERP with signing required: got %v, want 550 5.7.1", err)
	}
	for _, rcpt := range []string{"bounces@localhost", "postmaster@localhost"} {
		tcheck(t, deliver(t, ts.smtpAddr, rcpt, dsn), "delivering a forged DSN to "+rcpt)
	}
	if _, code := runCLI(t, "suppressed", "-config", ts.cliConfig, "user@dead.test"); code != 1 {
		t.Fatalf("forged DSNs suppressed user@dead.test (exit %d)", code)
	}
	if recs := queryJSON(t, "-config", ts.cliConfig, "--recipient", "user@dead.test"); len(recs) != 2 {
		t.Fatalf("the forged DSNs were not kept: %d records", len(recs))
	}

	signer, err := verp.NewSigner(verp.SignerOptions{Key: verp.Key{ID: "a", Secret: "0123456789abcdef0123"}, Domain: "localhost"})
	tcheck(t, err, "signer")
	from, err := signer.Sign("user@dead.test", "c1", "", time.Now())
	tcheck(t, err, "signing")
	tcheck(t, deliver(t, ts.smtpAddr, from, bytes.Replace(dsn, []byte("Subject:"), []byte("X-Try: 2\nSubject:"), 1)), "delivering to the signed token")
	if out, code := runCLI(t, "suppressed", "-config", ts.cliConfig, "user@dead.test"); code != 0 {
		t.Fatalf("signed bounce did not suppress: exit %d %s", code, out)
	}
}

// TestVerpKeygenSequence runs README's sequence: make a key into a file,
// sign a return path with it, verify the result.
func TestVerpKeygenSequence(t *testing.T) {
	key, code := runCLI(t, "verp", "keygen")
	if code != 0 {
		t.Fatalf("verp keygen: exit %d", code)
	}
	cfg := writeConfig(t, t.TempDir(), key)
	addr, code := runCLI(t, "verp", "sign", "-config", cfg, "--domain", "bounce.example.org",
		"--recipient", "user@example.com", "--campaign", "c42")
	if code != 0 {
		t.Fatalf("verp sign with the generated key: exit %d", code)
	}
	addr = strings.TrimSpace(addr)
	out, code := runCLI(t, "verp", "verify", "-config", cfg, addr)
	if code != 0 || !strings.Contains(out, "verdict:   valid") || !strings.Contains(out, "user@example.com") {
		t.Errorf("verify %s: exit %d\n%s", addr, code, out)
	}
	// Two keys are never the same, and a bad id is a usage error.
	if again, _ := runCLI(t, "verp", "keygen"); again == key {
		t.Error("verp keygen printed the same key twice")
	}
	if _, code := runCLI(t, "verp", "keygen", "--id", "ab"); code != 2 {
		t.Errorf("verp keygen --id ab: exit %d, want 2", code)
	}
}

// TestVerpVerifyNotVERP: an address that is not VERP exits 1, a plain
// VERP address 0.
func TestVerpVerifyNotVERP(t *testing.T) {
	for addr, want := range map[string]int{
		"bounces@bounce.example.org":                  1,
		"postmaster@bounce.example.org":               1,
		"bounces+user=example.com@bounce.example.org": 0,
	} {
		out, code := runCLI(t, "verp", "verify", addr)
		if code != want {
			t.Errorf("verp verify %s: exit %d, want %d\n%s", addr, code, want, out)
		}
	}
}
