package main

import (
	"strings"
	"testing"
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
