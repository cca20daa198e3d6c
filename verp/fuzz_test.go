package verp

import (
	"strings"
	"testing"
	"time"
)

func FuzzDecode(f *testing.F) {
	at := testNow
	s, err := NewSigner(SignerOptions{Key: testKey, Domain: "bounce.example.org"})
	if err != nil {
		f.Fatal(err)
	}
	c, err := NewSigner(SignerOptions{Key: oldKey, Domain: "bounce.example.org", Compact: true})
	if err != nil {
		f.Fatal(err)
	}
	for _, r := range []string{"user@example.com", "a+b=c@example.com", `"x y"@example.com`, "firstname.lastname@gmail.com"} {
		a, err := s.Sign(r, "c1", "l1", at)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(localOf(a))
		f.Add("prvs=1234567890=" + localOf(a))
		if a, err = c.Sign(r, "", "l", at); err == nil {
			f.Add(localOf(a))
		}
	}
	for _, seed := range []string{
		"bounces+user=example.com", `"bounces+a\"b=example.com"`, "bounces+=", "bounces+=a",
		"SRS1=H=f.example==H=TT=d.example=bounces+=akubb", "btv1==x==bounces+u=v", "\xff+\xfe=\xfd",
	} {
		f.Add(seed)
	}
	d := NewDecoder(Options{Keys: []Key{testKey, oldKey}, Now: func() time.Time { return at }})
	f.Fuzz(func(t *testing.T, local string) {
		res, err := d.Decode(local)
		_ = d.Explain(local + "@bounce.example.org").String()
		_ = Unwrap(local)
		if err != nil {
			if res != (Result{}) {
				t.Fatalf("error %v with result %+v", err, res)
			}
			return
		}
		if res.Verified != res.Signed {
			t.Fatalf("signed and verified disagree: %+v", res)
		}
		if !res.Verified {
			return
		}
		// A token that verifies must be one the signer makes again, up to
		// case and wrappers: anything else would be a forgery.
		key := testKey
		if res.KeyID == oldKey.ID {
			key = oldKey
		}
		sg := &Signer{o: SignerOptions{Key: key, Prefix: res.Prefix, Delimiter: "+", Equals: "="}}
		day := encodeDay(int64(res.Day))
		want := sg.local(versionAddr, day, res.Campaign, res.List, lowerASCII(res.Recipient), strings.Replace(res.Recipient, "@", "=", 1))
		if res.Form == FormCompact {
			want = sg.local(versionHash, day, res.Campaign, res.List, res.RecipientHash, res.RecipientHash)
		}
		inner, _ := unwrapLocal(unquoteLocal(local))
		if !strings.EqualFold(inner, want) {
			t.Fatalf("verified %q, but the signer makes %q", inner, want)
		}
	})
}
