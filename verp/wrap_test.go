package verp

import (
	"strings"
	"testing"
)

func TestUnwrap(t *testing.T) {
	tests := []struct{ in, want string }{
		{"bounces+user=example.com@bounce.example.org", "bounces+user=example.com@bounce.example.org"},
		{"prvs=4068eb2540=bounces+user=example.com@bounce.example.org", "bounces+user=example.com@bounce.example.org"},
		{"PRVS=4068EB2540=bounces@bounce.example.org", "bounces@bounce.example.org"},
		{"msprvs1=1202020UU5ulBw=bounces-tester@bounce.example.org", "bounces-tester@bounce.example.org"},
		{"btv1==068a4973b3a==bounces+u=example.com@bounce.example.org", "bounces+u=example.com@bounce.example.org"},
		{"SRS0=HHH=TT=bounce.example.org=bounces+user=example.com@forwarder.example", "bounces+user=example.com@bounce.example.org"},
		{"srs0+hhh=tt=bounce.example.org=bounces@forwarder.example", "bounces@bounce.example.org"},
		{"SRS0-x=y=bounce.example.org=local@fw.example", "local@bounce.example.org"},
		{"SRS1=HHH=first.example==HHH=TT=bounce.example.org=bounces+user=example.com@second.example", "bounces+user=example.com@bounce.example.org"},
		{"SRS1=HHH=first.example=+HHH=TT=bounce.example.org=x@second.example", "x@bounce.example.org"},
		// BATV around SRS, and SRS around BATV.
		{"prvs=1234567890=SRS0=h=tt=bounce.example.org=bounces@fw.example", "bounces@bounce.example.org"},
		{"SRS0=h=tt=bounce.example.org=prvs=1234567890=bounces@fw.example", "bounces@bounce.example.org"},
		// A quoted local part is unquoted.
		{`"prvs=1234567890=bounces"@bounce.example.org`, "bounces@bounce.example.org"},
		// A bare local part.
		{"prvs=1234567890=bounces", "bounces"},
		// Not wrappers, or broken ones: left alone.
		{"prvs=@bounce.example.org", "prvs=@bounce.example.org"},
		{"prvs=tag=@bounce.example.org", "prvs=tag=@bounce.example.org"},
		{"prvsx=tag=local@bounce.example.org", "prvsx=tag=local@bounce.example.org"},
		{"btv1==tag@bounce.example.org", "btv1==tag@bounce.example.org"},
		{"SRS0=HHH=TT=domain@fw.example", "SRS0=HHH=TT=domain@fw.example"},
		{"SRS0==TT=domain=local@fw.example", "SRS0==TT=domain=local@fw.example"},
		{"SRS1=HHH=first.example=HHH=TT=d=l@fw.example", "SRS1=HHH=first.example=HHH=TT=d=l@fw.example"},
		{"SRS2=a=b=c=d@fw.example", "SRS2=a=b=c=d@fw.example"},
		{"", ""},
		{"@", "@"},
	}
	for _, tt := range tests {
		if got := Unwrap(tt.in); got != tt.want {
			t.Errorf("Unwrap(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUnwrapDepthBounded(t *testing.T) {
	in := strings.Repeat("prvs=1234567890=", 10) + "bounces@b.example"
	want := strings.Repeat("prvs=1234567890=", 10-maxWrappers) + "bounces@b.example"
	if got := Unwrap(in); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestDecodeWrapped(t *testing.T) {
	d := newTestDecoder(0, testKey)
	signed := localOf(mustSign(t, testKey, "user@example.com", "c", "l", testNow))
	for _, c := range []struct{ local, wrapper string }{
		{"prvs=1234567890=" + signed, "prvs"},
		{"btv1==068a4973b3a==" + signed, "btv1"},
		{"SRS0=HHH=TT=bounce.example.org=" + signed, "srs0"},
		{"SRS1=HHH=first.example==HHH=TT=bounce.example.org=" + signed, "srs1"},
		{"PRVS=1234567890=" + upperASCII(signed), "prvs"}, // wrapped and case-folded
		{"prvs=1234567890=SRS0=HHH=TT=bounce.example.org=" + signed, "prvs,srs0"},
	} {
		res, err := d.Decode(c.local)
		tcheck(t, err, "decode "+c.local)
		if !res.Verified || !res.MatchRecipient("user@example.com") || res.Wrapper != c.wrapper {
			t.Errorf("%q: %+v", c.local, res)
		}
	}
	res, err := d.Decode("prvs=1234567890=bounces+user=example.com")
	tcheck(t, err, "plain wrapped")
	if res.Recipient != "user@example.com" || res.Verified || res.Wrapper != "prvs" {
		t.Errorf("plain wrapped: %+v", res)
	}
	// A wrapped forgery is still refused.
	if _, err := d.Decode("prvs=1234567890=" + mutate(signed, len(signed)-1)); err != ErrBadMAC {
		t.Errorf("wrapped tampered token: %v", err)
	}
}
