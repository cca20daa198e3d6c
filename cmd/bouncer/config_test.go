package main

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// leafKeys lists section and key of every scalar field of Config with
// its type, skipping the policy rules and push targets (arrays of tables).
func leafKeys(typ reflect.Type, prefix string) map[string]reflect.Type {
	keys := map[string]reflect.Type{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := f.Tag.Get("toml")
		switch {
		case f.Type.Kind() == reflect.Struct:
			for k, v := range leafKeys(f.Type, prefix+name+".") {
				keys[k] = v
			}
		case f.Type.Kind() != reflect.Slice:
			keys[prefix+name] = f.Type
		}
	}
	return keys
}

// tomlAt writes "key = value" under its table: "smtp.read_timeout" and
// "5" give "[smtp]\nread_timeout = 5\n".
func tomlAt(key, value string) string {
	i := strings.LastIndex(key, ".")
	return fmt.Sprintf("[%s]\n%s = %s\n", key[:i], key[i+1:], value)
}

// TestConfigRefusesAbsurdValues is finding 6 of issue 21: every size,
// count and duration has bounds, a duration needs a unit, and each
// refusal is one line naming the key.
func TestConfigRefusesAbsurdValues(t *testing.T) {
	durType := reflect.TypeFor[Duration]()
	n := 0
	for key, typ := range leafKeys(reflect.TypeFor[Config](), "") {
		var absurd []string
		switch {
		case typ == durType:
			absurd = []string{"5", `"2562047h"`, `"-5s"`, `"1ns"`}
		case typ.Kind() == reflect.Int, typ.Kind() == reflect.Int64:
			absurd = []string{"9223372036854775807", "-5"}
		case typ.Kind() == reflect.Float64:
			absurd = []string{"1e300", "-5.0"}
		default:
			continue
		}
		for _, v := range absurd {
			n++
			t.Run(key+"="+v, func(t *testing.T) {
				_, err := loadConfig(writeConfig(t, t.TempDir(), tomlAt(key, v)))
				if err == nil {
					t.Fatalf("%s = %s was accepted", key, v)
				}
				msg := err.Error()
				if strings.Contains(msg, "\n") || !strings.Contains(msg, key[strings.LastIndex(key, ".")+1:]) {
					t.Fatalf("%s = %s: error %q is not one line naming the key", key, v, msg)
				}
			})
		}
	}
	if n < 80 {
		t.Fatalf("only %d absurd values tried; did leafKeys miss keys?", n)
	}
}

// TestConfigMessageLimitOverflow is the size-0 loss of finding 6: the
// largest int64 as max_message_bytes passed validation (the reserve it
// needs overflowed to a negative number), and every message was then
// acknowledged and stored empty.
func TestConfigMessageLimitOverflow(t *testing.T) {
	p := writeConfig(t, t.TempDir(), "[smtp]\nmax_message_bytes = 9223372036854775807\nmax_data_memory = 9223372036854775807\n")
	_, err := loadConfig(p)
	if err == nil || !strings.Contains(err.Error(), "smtp.max_message_bytes") {
		t.Fatalf("got %v, want max_message_bytes refused", err)
	}
}

// TestSignedVERPRequiredOffLoopback is finding 1 of issue 21: listening
// off loopback without an explicit verp.required, signed return paths are
// required, and a config without keys is refused with an error that says
// how to make one; verp.required = false is an explicit choice.
func TestSignedVERPRequiredOffLoopback(t *testing.T) {
	const public = "[smtp]\nlisten = \"0.0.0.0:25\"\ndomains = [\"bounce.example.org\"]\n"
	_, err := loadConfig(writeConfig(t, t.TempDir(), public))
	if err == nil || !strings.Contains(err.Error(), "verp.keys") || !strings.Contains(err.Error(), "verp keygen") ||
		strings.Contains(err.Error(), "\n") {
		t.Fatalf("off loopback without keys: got %v, want one line naming verp.keys and how to make one", err)
	}
	cfg, err := loadConfig(writeConfig(t, t.TempDir(), public+"[verp]\nkeys = [{ id = \"a\", secret = \"0123456789abcdef0123\" }]\n"))
	tcheck(t, err, "off loopback with a key")
	if !cfg.verpRequired() || !cfg.verpOptions().Required {
		t.Error("off loopback with a key: signed return paths are not required")
	}
	cfg, err = loadConfig(writeConfig(t, t.TempDir(), public+"[verp]\nrequired = false\n"))
	tcheck(t, err, "off loopback, verp.required = false")
	if cfg.verpRequired() {
		t.Error("verp.required = false was not honoured")
	}
	cfg, err = loadConfig(writeConfig(t, t.TempDir(), "[smtp]\nlisten = \"127.0.0.1:2525\"\n"))
	tcheck(t, err, "loopback")
	if cfg.verpRequired() {
		t.Error("on loopback, signed return paths are required by default")
	}
}

// TestConfigCommitIntervalIgnored: store.commit_interval, which selected
// the write-ahead log of older versions, still loads (their files must
// not fail) and gives one warning line saying the log was removed; a
// file without it gives none.
func TestConfigCommitIntervalIgnored(t *testing.T) {
	for _, v := range []string{`"0s"`, `"50ms"`, `"1h"`} {
		cfg, err := loadConfig(writeConfig(t, t.TempDir(), tomlAt("store.commit_interval", v)))
		if err != nil {
			t.Fatalf("commit_interval = %s: %v", v, err)
		}
		w := cfg.warnings()
		if len(w) != 1 || strings.Contains(w[0], "\n") || !strings.Contains(w[0], "store.commit_interval") ||
			!strings.Contains(w[0], "write-ahead log was removed") {
			t.Fatalf("commit_interval = %s: warnings %q, want one line saying the write-ahead log was removed", v, w)
		}
	}
	// Still a duration: a bare number is refused as before.
	if _, err := loadConfig(writeConfig(t, t.TempDir(), tomlAt("store.commit_interval", "50"))); err == nil {
		t.Fatal("commit_interval = 50 (no unit) was accepted")
	}
	for _, file := range []string{"", "../../config.example.toml"} {
		cfg, err := loadConfig(file)
		if err != nil {
			t.Fatal(err)
		}
		if w := cfg.warnings(); len(w) != 0 {
			t.Fatalf("config %q: warnings %q, want none", file, w)
		}
	}
}
