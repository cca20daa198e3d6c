package verp

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func tcheck(t *testing.T, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

func TestDecodePlain(t *testing.T) {
	d := NewDecoder(Options{})
	tests := []struct {
		local, want string
	}{
		{"bounces+user=example.com", "user@example.com"},
		{"Bounces+User=Example.COM", "User@example.com"},
		{"bounces+first.last=sub.example.co.uk", "first.last@sub.example.co.uk"},
		{"bounces+a=b=example.com", "a=b@example.com"},               // "=" in the local part: split at the last
		{"bounces+user+tag=example.com", "user+tag@example.com"},     // "+" in the local part: split at the first
		{"bounces+x+y+z=w=example.com", "x+y+z=w@example.com"},       // both
		{`"bounces+john doe=example.com"`, `"john doe"@example.com`}, // quoted local part, re-quoted
		{`"bounces+a\"b=example.com"`, `"a\"b"@example.com`},
		{"bounces+user=[192.0.2.1]", "user@[192.0.2.1]"},
		{"bounces+ü=bücher.example", "ü@bücher.example"},
		{"bounces+" + strings.Repeat("x", 100) + "=example.com", strings.Repeat("x", 100) + "@example.com"},
		// not VERP
		{"bounces", ""},
		{"postmaster", ""},
		{"+user=example.com", ""},     // empty prefix
		{"bounces+user", ""},          // no "="
		{"bounces+user=", ""},         // empty domain
		{"bounces+user=exa mple", ""}, // space in domain
		{"bounces+us\x01er=example.com", ""},
		{"bounces+user=example.com.", ""},
		{"bounces+\xff=example.com", ""}, // invalid UTF-8
		{"", ""},
		{`""`, ""},
		{"bounces+" + strings.Repeat("x", MaxLocalLen) + "=example.com", ""}, // over the cap
	}
	for _, tt := range tests {
		t.Run(tt.local, func(t *testing.T) {
			res, err := d.Decode(tt.local)
			tcheck(t, err, "decode")
			if res.Recipient != tt.want {
				t.Fatalf("recipient %q, want %q", res.Recipient, tt.want)
			}
			if res.Signed || res.Verified {
				t.Fatalf("plain form marked signed: %+v", res)
			}
			wantForm := FormPlain
			if tt.want == "" {
				wantForm = FormNone
			}
			if res.Form != wantForm {
				t.Fatalf("form %q, want %q", res.Form, wantForm)
			}
		})
	}
}

func TestDecodeDelimiters(t *testing.T) {
	d := NewDecoder(Options{Delimiter: "-", Equals: "#"})
	res, err := d.Decode("bounces-user#example.com")
	tcheck(t, err, "decode")
	if res.Recipient != "user@example.com" || res.Prefix != "bounces" {
		t.Fatalf("got %+v", res)
	}
	res, err = d.Decode("bounces+user=example.com")
	tcheck(t, err, "decode")
	if res.Form != FormNone {
		t.Fatalf("default delimiters decoded with custom ones: %+v", res)
	}
}

func TestDecodePrefix(t *testing.T) {
	d := NewDecoder(Options{Prefix: "bounces"})
	res, err := d.Decode("BOUNCES+user=example.com")
	tcheck(t, err, "decode")
	if res.Recipient != "user@example.com" {
		t.Fatalf("got %+v", res)
	}
	res, err = d.Decode("other+user=example.com")
	tcheck(t, err, "decode")
	if res.Form != FormNone {
		t.Fatalf("other prefix decoded: %+v", res)
	}
}

func TestRequired(t *testing.T) {
	d := NewDecoder(Options{Required: true, Keys: []Key{testKey}, Now: func() time.Time { return testNow }})
	res, err := d.Decode("bounces+user=example.com")
	if err != ErrUnsigned {
		t.Fatalf("plain VERP with Required: err %v, want ErrUnsigned", err)
	}
	if res != (Result{}) {
		t.Fatalf("refused decode returned %+v", res)
	}
	// A bare local part is not VERP: accepted, unverified.
	res, err = d.Decode("postmaster")
	if err != nil || res.Form != FormNone {
		t.Fatalf("postmaster: %+v, %v", res, err)
	}
	// A signed token passes.
	addr := mustSign(t, testKey, "user@example.com", "", "", testNow)
	res, err = d.Decode(localOf(addr))
	tcheck(t, err, "signed with Required")
	if !res.Verified {
		t.Fatalf("not verified: %+v", res)
	}
}

func TestOptionsValidate(t *testing.T) {
	good := Options{Keys: []Key{testKey, oldKey}, ExpiryDays: 60, Required: true}
	tcheck(t, good.Validate(), "good options")
	tcheck(t, Options{}.Validate(), "zero options")
	bad := []Options{
		{Delimiter: "a"},
		{Equals: "-"},
		{Delimiter: "."},
		{Delimiter: "++"},
		{Delimiter: "=", Equals: "="},
		{Prefix: "a+b"},
		{ExpiryDays: 40000},
		{Keys: []Key{{ID: "ab", Secret: testKey.Secret}}},
		{Keys: []Key{{ID: "a", Secret: "short"}}},
		{Keys: []Key{{ID: "a", Secret: testKey.Secret}, {ID: "A", Secret: oldKey.Secret}}},
		{Required: true},
	}
	for _, o := range bad {
		if o.Validate() == nil {
			t.Errorf("%+v validated", o)
		}
	}
}

func TestMatchRecipient(t *testing.T) {
	r := Result{Recipient: "User@Example.com", Form: FormPlain}
	for _, a := range []string{"user@example.com", "rfc822; USER@example.COM", " <User@Example.com> "} {
		if !r.MatchRecipient(a) {
			t.Errorf("%q does not match %q", a, r.Recipient)
		}
	}
	for _, a := range []string{"", "other@example.com", "user@example.org"} {
		if r.MatchRecipient(a) {
			t.Errorf("%q matches %q", a, r.Recipient)
		}
	}
	if (Result{}).MatchRecipient("") || (Result{}).MatchRecipient("user@example.com") {
		t.Error("empty Result matches")
	}
}

func TestExplainPlainAndRefused(t *testing.T) {
	d := NewDecoder(Options{Keys: []Key{testKey}, Now: func() time.Time { return testNow }})
	x := d.Explain("prvs=1234abcdef=bounces+user=example.com@bounce.example.org")
	if x.Err != nil || x.Result.Recipient != "user@example.com" || x.Result.Wrapper != "prvs" {
		t.Fatalf("explain: %+v", x)
	}
	for _, want := range []string{"wrappers:  prvs", "form:      plain", "accepted, unverified"} {
		if !strings.Contains(x.String(), want) {
			t.Errorf("explanation lacks %q:\n%s", want, x)
		}
	}
	addr := mustSign(t, testKey, "user@example.com", "c1", "l1", testNow.AddDate(0, 0, -40))
	x = d.Explain(addr)
	if !errors.Is(x.Err, ErrExpired) || x.AgeDays != 40 || x.Result.Campaign != "c1" {
		t.Fatalf("explain expired: %+v", x)
	}
	if s := x.String(); !strings.Contains(s, "40 days old") || !strings.Contains(s, "refused (550 5.7.1)") {
		t.Errorf("explanation:\n%s", s)
	}
}
