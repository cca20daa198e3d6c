package verp

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	testKey = Key{ID: "a", Secret: "0123456789abcdef0123456789abcdef"}
	oldKey  = Key{ID: "z", Secret: "an older secret that is being retired"}
	testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func mustSigner(t *testing.T, o SignerOptions) *Signer {
	t.Helper()
	if o.Domain == "" {
		o.Domain = "bounce.example.org"
	}
	s, err := NewSigner(o)
	tcheck(t, err, "new signer")
	return s
}

func mustSign(t *testing.T, k Key, rcpt, campaign, list string, at time.Time) string {
	t.Helper()
	a, err := mustSigner(t, SignerOptions{Key: k}).Sign(rcpt, campaign, list, at)
	tcheck(t, err, "sign")
	return a
}

// upperASCII is the inverse of lowerASCII: MTAs fold ASCII case only.
func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func localOf(addr string) string {
	return addr[:strings.LastIndexByte(addr, '@')]
}

// newTestDecoder verifies with keys, "today" being testNow plus days.
func newTestDecoder(days int, keys ...Key) *Decoder {
	now := testNow.AddDate(0, 0, days)
	return NewDecoder(Options{Keys: keys, Now: func() time.Time { return now }})
}

func TestSignVerifyRoundTrip(t *testing.T) {
	d := newTestDecoder(3, testKey)
	tests := []struct {
		rcpt, campaign, list string
		form                 Form
	}{
		{"user@example.com", "", "", FormSigned},
		{"user@example.com", "c42", "news", FormSigned},
		{"First.Last@Example.COM", "Spring_26", "l-1", FormSigned},
		{"a+b=c@example.com", "c", "", FormSigned},
		{"firstname.lastname@gmail.com", "c42", "news", FormCompact},
		{`"john doe"@example.com`, "c", "l", FormCompact},
		{"jörg@bücher.example", "", "", FormCompact},
		{"user@[192.0.2.1]", "", "", FormCompact},
	}
	for _, tt := range tests {
		t.Run(tt.rcpt, func(t *testing.T) {
			addr := mustSign(t, testKey, tt.rcpt, tt.campaign, tt.list, testNow)
			local := localOf(addr)
			if len(local) > 64 {
				t.Fatalf("local part %q is %d octets", local, len(local))
			}
			if !strings.HasSuffix(addr, "@bounce.example.org") || !isDotAtom(local) {
				t.Fatalf("address %q is not a dot-atom at the bounce domain", addr)
			}
			res, err := d.Decode(local)
			tcheck(t, err, "decode "+addr)
			if !res.Signed || !res.Verified || res.Form != tt.form || res.KeyID != "a" {
				t.Fatalf("decode %q: %+v", addr, res)
			}
			if res.Campaign != strings.ToLower(tt.campaign) || res.List != strings.ToLower(tt.list) {
				t.Fatalf("campaign/list %q/%q, want %q/%q", res.Campaign, res.List, tt.campaign, tt.list)
			}
			if !res.MatchRecipient(tt.rcpt) || !res.MatchRecipient("rfc822; "+upperASCII(tt.rcpt)) {
				t.Fatalf("result %+v does not match %q", res, tt.rcpt)
			}
			if res.MatchRecipient("someone.else@example.com") {
				t.Fatalf("result %+v matches another address", res)
			}
			if tt.form == FormSigned && !strings.EqualFold(res.Recipient, tt.rcpt) {
				t.Fatalf("recipient %q, want %q", res.Recipient, tt.rcpt)
			}
			if tt.form == FormCompact && (res.Recipient != "" || res.RecipientHash != AddressHash(tt.rcpt)) {
				t.Fatalf("compact result %+v", res)
			}
		})
	}
}

func TestSignCompactOption(t *testing.T) {
	s := mustSigner(t, SignerOptions{Key: testKey, Compact: true})
	addr, err := s.Sign("user@example.com", "c", "l", testNow)
	tcheck(t, err, "sign")
	res, err := newTestDecoder(0, testKey).Decode(localOf(addr))
	tcheck(t, err, "decode")
	if res.Form != FormCompact || !res.MatchRecipient("User@Example.com") || res.MatchRecipient("user2@example.com") {
		t.Fatalf("compact: %+v", res)
	}
}

func TestSignErrors(t *testing.T) {
	s := mustSigner(t, SignerOptions{Key: testKey})
	for _, c := range []struct{ rcpt, campaign, list string }{
		{"no-at-sign", "", ""},
		{"@example.com", "", ""},
		{"user@", "", ""},
		{"user@example.com", "a.b", ""},
		{"user@example.com", "", "a=b"},
		{"user@example.com", "c\x00", ""},
		{"us\x00er@example.com", "", ""},
		{"user@exa mple.com", "", ""},
		{"\xffuser@example.com", "", ""},
	} {
		if a, err := s.Sign(c.rcpt, c.campaign, c.list, testNow); err == nil {
			t.Errorf("Sign(%q, %q, %q) = %q, want error", c.rcpt, c.campaign, c.list, a)
		}
	}
	_, err := s.Sign("user@example.com", strings.Repeat("c", 15), strings.Repeat("l", 15), testNow)
	if !errors.Is(err, ErrTooLong) {
		t.Fatalf("long ids: %v, want ErrTooLong", err)
	}
	for _, o := range []SignerOptions{
		{Key: Key{ID: "a", Secret: "short"}, Domain: "b.example"},
		{Key: testKey, Domain: "not a domain"},
		{Key: testKey, Domain: "b.example", Prefix: "a=b"},
		{Key: testKey, Domain: "b.example", Prefix: ".x"},
		{Key: testKey, Domain: "b.example", Equals: "x"},
	} {
		if _, err := NewSigner(o); err == nil {
			t.Errorf("NewSigner(%+v) succeeded", o)
		}
	}
}

func TestCustomSeparators(t *testing.T) {
	s := mustSigner(t, SignerOptions{Key: testKey, Prefix: "rp", Delimiter: "-", Equals: "#"})
	addr, err := s.Sign("user@example.com", "c", "", testNow)
	tcheck(t, err, "sign")
	if !strings.HasPrefix(addr, "rp-#a") {
		t.Fatalf("address %q", addr)
	}
	d := NewDecoder(Options{Delimiter: "-", Equals: "#", Keys: []Key{testKey}, Now: func() time.Time { return testNow }})
	res, err := d.Decode(localOf(addr))
	tcheck(t, err, "decode")
	if !res.Verified || res.Recipient != "user@example.com" {
		t.Fatalf("got %+v", res)
	}
}

// mutate returns local with the byte at i replaced by another character of
// the same class, so that the token still parses.
func mutate(local string, i int) string {
	b := []byte(local)
	alphabet := b32Alphabet
	if !strings.ContainsRune(alphabet, rune(b[i]|0x20)) {
		alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	}
	for _, c := range []byte(alphabet) {
		if c != b[i]|0x20 {
			b[i] = c
			break
		}
	}
	return string(b)
}

func TestTamperedFieldsRejected(t *testing.T) {
	d := newTestDecoder(0, testKey, oldKey)
	addr := mustSign(t, testKey, "user@example.com", "camp", "list", testNow)
	local := localOf(addr) // bounces+=a k DDD MAC =camp=list=user=example.com
	hdr := len("bounces+=")
	fields := map[string]int{
		"version":          hdr,
		"day":              hdr + 2,
		"mac first":        hdr + 5,
		"mac last":         hdr + 5 + macLen - 1,
		"campaign":         strings.Index(local, "camp"),
		"list":             strings.Index(local, "list"),
		"recipient local":  strings.Index(local, "user"),
		"recipient domain": strings.Index(local, "example"),
	}
	for name, i := range fields {
		t.Run(name, func(t *testing.T) {
			bad := mutate(local, i)
			res, err := d.Decode(bad)
			if err != ErrBadMAC {
				t.Fatalf("%q: err %v, want ErrBadMAC (%+v)", bad, err, res)
			}
		})
	}
	t.Run("key id to another configured key", func(t *testing.T) {
		bad := local[:hdr+1] + "z" + local[hdr+2:]
		if _, err := d.Decode(bad); err != ErrBadMAC {
			t.Fatalf("%q: err %v, want ErrBadMAC", bad, err)
		}
	})
	t.Run("key id to an unknown key", func(t *testing.T) {
		bad := local[:hdr+1] + "q" + local[hdr+2:]
		if _, err := d.Decode(bad); err != ErrUnknownKey {
			t.Fatalf("%q: err %v, want ErrUnknownKey", bad, err)
		}
	})
	t.Run("fields added or removed", func(t *testing.T) {
		for _, bad := range []string{
			strings.Replace(local, "=camp=", "=camp==", 1),
			strings.Replace(local, "=camp=list=", "=camplist=", 1),
			strings.Replace(local, "=camp=list=", "=list=camp=", 1),
			local + "x",
			local[:len(local)-1],
			strings.Replace(local, "user=example.com", "user@example.com", 1),
		} {
			if _, err := d.Decode(bad); err != ErrBadMAC {
				t.Errorf("%q: err %v, want ErrBadMAC", bad, err)
			}
		}
	})
	t.Run("compact hash", func(t *testing.T) {
		a, err := mustSigner(t, SignerOptions{Key: testKey, Compact: true}).Sign("user@example.com", "", "", testNow)
		tcheck(t, err, "sign")
		c := localOf(a)
		bad := mutate(c, len(c)-1)
		if _, err := d.Decode(bad); err != ErrBadMAC {
			t.Fatalf("%q: err %v, want ErrBadMAC", bad, err)
		}
	})
}

func TestWrongKeyRejected(t *testing.T) {
	wrong := Key{ID: testKey.ID, Secret: "a different secret of some length"}
	addr := mustSign(t, wrong, "user@example.com", "", "", testNow)
	if _, err := newTestDecoder(0, testKey).Decode(localOf(addr)); err != ErrBadMAC {
		t.Fatalf("wrong key: err %v, want ErrBadMAC", err)
	}
	if _, err := newTestDecoder(0).Decode(localOf(addr)); err != ErrUnknownKey {
		t.Fatalf("no keys: err %v, want ErrUnknownKey", err)
	}
}

func TestExpiry(t *testing.T) {
	addr := mustSign(t, testKey, "user@example.com", "", "", testNow)
	local := localOf(addr)
	for _, c := range []struct {
		days, expiry int
		want         error
	}{
		{0, 0, nil},
		{30, 0, nil}, // default 30 days
		{31, 0, ErrExpired},
		{-1, 0, nil},        // signer's clock a day ahead
		{-2, 0, ErrExpired}, // two days ahead is not skew
		{7, 7, nil},
		{8, 7, ErrExpired},
		{5000, -1, nil},  // never expires
		{32768, 30, nil}, // 89 years later the stamp wraps (documented)
	} {
		d := NewDecoder(Options{Keys: []Key{testKey}, ExpiryDays: c.expiry,
			Now: func() time.Time { return testNow.AddDate(0, 0, c.days) }})
		if _, err := d.Decode(local); err != c.want {
			t.Errorf("after %d days, expiry %d: err %v, want %v", c.days, c.expiry, err, c.want)
		}
	}
}

func TestCaseFoldedTokenAccepted(t *testing.T) {
	d := newTestDecoder(1, testKey)
	for _, rcpt := range []string{"User.Name@Example.com", "a-very-long-address-to-force-compact@example.com"} {
		local := localOf(mustSign(t, testKey, rcpt, "Camp", "List", testNow))
		for _, folded := range []string{upperASCII(local), strings.ToLower(local), local} {
			res, err := d.Decode(folded)
			tcheck(t, err, "decode "+folded)
			if !res.Verified || !res.MatchRecipient(rcpt) || res.Campaign != "camp" || res.List != "list" {
				t.Fatalf("%q: %+v", folded, res)
			}
		}
	}
}

func TestKeyRotation(t *testing.T) {
	newKey := Key{ID: "b", Secret: "the new secret, rotated in this month"}
	oldAddr := localOf(mustSign(t, oldKey, "user@example.com", "", "", testNow))
	newAddr := localOf(mustSign(t, newKey, "user@example.com", "", "", testNow))

	both := newTestDecoder(1, newKey, oldKey)
	for _, l := range []string{oldAddr, newAddr} {
		if res, err := both.Decode(l); err != nil || !res.Verified {
			t.Fatalf("with both keys, %q: %+v, %v", l, res, err)
		}
	}
	retired := newTestDecoder(1, newKey)
	if _, err := retired.Decode(oldAddr); err != ErrUnknownKey {
		t.Fatalf("removed key: err %v, want ErrUnknownKey", err)
	}
	if res, err := retired.Decode(newAddr); err != nil || res.KeyID != "b" {
		t.Fatalf("new key after rotation: %+v, %v", res, err)
	}
}

func TestBruteForceRejected(t *testing.T) {
	d := newTestDecoder(0, testKey, oldKey)
	rng := rand.New(rand.NewPCG(1, 2))
	day := encodeDay(epochDay(testNow))
	randB32 := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = b32Alphabet[rng.IntN(len(b32Alphabet))]
		}
		return string(b)
	}
	const n = 20000
	for i := range n {
		var local string
		switch i % 3 {
		case 0: // well-formed, right key and day, random MAC
			local = "bounces+=aa" + day + randB32(macLen) + "=c=l=victim=example.com"
		case 1: // compact form, random MAC and hash
			local = "bounces+=ha" + day + randB32(macLen) + "==" + "=" + randB32(hashLen)
		default: // random everything after the marker
			local = "bounces+=" + randB32(rng.IntN(60))
		}
		res, err := d.Decode(local)
		if err == nil || res.Verified || res.Recipient != "" {
			t.Fatalf("random token %q accepted: %+v", local, res)
		}
		if err != ErrBadMAC && err != ErrUnknownKey {
			t.Fatalf("random token %q: err %v", local, err)
		}
	}
}

func TestSignedMarkerWithoutToken(t *testing.T) {
	// "<prefix>+=" starts a signed token; no plain form starts that way, so
	// these are refused rather than read as plain VERP.
	for _, local := range []string{"bounces+=example.com", "bounces+=", "bounces+==a=b", "bounces+=" + strings.Repeat("a", 40)} {
		for _, d := range []*Decoder{newTestDecoder(0, testKey), newTestDecoder(0)} {
			if res, err := d.Decode(local); err != ErrBadMAC || res != (Result{}) {
				t.Errorf("%q: %+v, %v; want ErrBadMAC", local, res, err)
			}
		}
	}
}

func BenchmarkSign(b *testing.B) {
	s, err := NewSigner(SignerOptions{Key: testKey, Domain: "bounce.example.org"})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Sign("user@example.com", "c42", "news", testNow); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeSigned(b *testing.B) {
	s, err := NewSigner(SignerOptions{Key: testKey, Domain: "bounce.example.org"})
	if err != nil {
		b.Fatal(err)
	}
	a, err := s.Sign("user@example.com", "c42", "news", testNow)
	if err != nil {
		b.Fatal(err)
	}
	local := localOf(a)
	d := NewDecoder(Options{Keys: []Key{testKey}, Now: func() time.Time { return testNow }})
	for b.Loop() {
		if _, err := d.Decode(local); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSignedTooLongRejected(t *testing.T) {
	local := localOf(mustSign(t, testKey, "user@example.com", "", "", testNow))
	long := strings.Replace(local, "user", strings.Repeat("u", 40), 1)
	if _, err := newTestDecoder(0, testKey).Decode(long); err != ErrBadMAC {
		t.Fatalf("over 64 octets: %v", err)
	}
}

// readVector parses the ```vector block of FORMAT.md.
func readVector(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("FORMAT.md")
	tcheck(t, err, "open FORMAT.md")
	defer f.Close()
	v := map[string]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "```vector":
			in = true
		case in && line == "```":
			in = false
		case in:
			k, val, ok := strings.Cut(line, ":")
			if !ok {
				t.Fatalf("vector line %q", line)
			}
			v[k] = strings.TrimSpace(val)
		}
	}
	tcheck(t, sc.Err(), "read FORMAT.md")
	if len(v) < 10 {
		t.Fatalf("FORMAT.md vector has %d fields", len(v))
	}
	return v
}

func TestFormatVector(t *testing.T) {
	v := readVector(t)
	at, err := time.Parse(time.RFC3339, v["time"])
	tcheck(t, err, "vector time")
	key := Key{ID: v["key_id"], Secret: v["secret"]}

	if got := strconv.FormatInt(epochDay(at), 10); got != v["day"] {
		t.Errorf("day %s, want %s", got, v["day"])
	}
	if got := encodeDay(epochDay(at)); got != v["day_stamp"] {
		t.Errorf("day stamp %s, want %s", got, v["day_stamp"])
	}
	// The MAC inputs, computed independently of computeMAC.
	for _, form := range []string{"a", "h"} {
		m := hmac.New(sha256.New, []byte(key.Secret))
		m.Write([]byte(strings.ReplaceAll(v["mac_input_"+form], `\0`, "\x00")))
		if got := hex.EncodeToString(m.Sum(nil)); got != v["hmac_"+form] {
			t.Errorf("hmac_%s %s, want %s", form, got, v["hmac_"+form])
		}
	}
	sum := sha256.Sum256([]byte(strings.ToLower(v["recipient"])))
	if got := hex.EncodeToString(sum[:]); got != v["sha256_addr"] {
		t.Errorf("sha256 of address %s, want %s", got, v["sha256_addr"])
	}
	if got := AddressHash(v["recipient"]); got != v["addr_hash"] {
		t.Errorf("address hash %s, want %s", got, v["addr_hash"])
	}
	for _, c := range []struct {
		name    string
		compact bool
	}{{"signed", false}, {"compact", true}} {
		s := mustSigner(t, SignerOptions{Key: key, Domain: v["bounce"], Compact: c.compact})
		got, err := s.Sign(v["recipient"], v["campaign"], v["list"], at)
		tcheck(t, err, "sign vector")
		if got != v[c.name] {
			t.Errorf("%s: %s, want %s", c.name, got, v[c.name])
		}
		d := NewDecoder(Options{Keys: []Key{key}, Now: func() time.Time { return at }})
		res, err := d.Decode(localOf(v[c.name]))
		tcheck(t, err, "decode vector")
		if !res.Verified || !res.MatchRecipient(v["recipient"]) || res.Campaign != v["campaign"] || res.List != v["list"] {
			t.Errorf("%s decodes to %+v", c.name, res)
		}
	}
}

func TestExplainSigned(t *testing.T) {
	d := newTestDecoder(2, testKey)
	addr := mustSign(t, testKey, "user@example.com", "c42", "news", testNow)
	x := d.Explain("SRS0=abcd=T2=bounce.example.org=" + localOf(addr) + "@forwarder.example")
	if x.Err != nil || !x.Result.Verified || x.Unwrapped != addr || x.AgeDays != 2 || x.Date != "2026-03-01" {
		t.Fatalf("explain: %+v", x)
	}
	s := x.String()
	for _, want := range []string{"recipient: user@example.com", "campaign:  c42", "key:       a (configured)", "verdict:   valid", "wrappers:  srs0"} {
		if !strings.Contains(s, want) {
			t.Errorf("explanation lacks %q:\n%s", want, s)
		}
	}
	// The explanation must not reveal the MAC the token should have had.
	bad := mutate(localOf(addr), len("bounces+=akubb"))
	x = d.Explain(bad + "@bounce.example.org")
	want := computeMAC(testKey.Secret, 'a', "a", encodeDay(epochDay(testNow)), "c42", "news", "user@example.com")
	if x.Err != ErrBadMAC || strings.Contains(x.String(), want) {
		t.Fatalf("explain tampered: %v\n%s", x.Err, x)
	}
}
