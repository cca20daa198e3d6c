//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSamples decodes the DSNs that Postfix and Exim produced in an earlier
// run (saved with -update) through "bouncer parse --json", so the real
// samples are checked on machines without the MTAs too. Dates and queue
// ids change from run to run; what is checked here does not.
func TestSamples(t *testing.T) {
	if *update {
		t.Skip("SKIP: -update rewrites the samples in this run")
	}
	// orig and by (original_recipient, decoded_by) are checked where
	// they are given.
	type want struct {
		recipient, action, status, literal, kind, class, envid string
		orig, by                                               string
	}
	tests := []struct {
		file string
		want []want
	}{
		{"postfix-5.4.3-and-5.1.1.eml", []want{
			{routeA, "failed", "5.4.3", "5.4.3", "bounce", "hard", "", "", ""},
			{unknownA, "failed", "5.1.1", "5.1.1", "bounce", "hard", "", "", ""},
		}},
		{"postfix-5.4.3-envid-orcpt.eml", []want{
			{routeB, "failed", "5.4.3", "5.4.3", "bounce", "hard", "postfix-envid-route-b", "", ""},
		}},
		{"postfix-4.4.3-delayed.eml", []want{
			{laterC, "delayed", "4.4.3", "4.4.3", "delay", "soft", "postfix-envid-later-c", "", ""},
		}},
		{"postfix-4.4.3-failed.eml", []want{
			{laterC, "failed", "4.4.3", "4.4.3", "bounce", "soft", "postfix-envid-later-c", "", ""},
		}},
		// Exim writes a generic Status and the reply in Diagnostic-Code.
		{"exim-5.4.3-and-5.1.1.eml", []want{
			{routeA, "failed", "5.4.3", "5.0.0", "bounce", "hard", "", "", ""},
			{unknownA, "failed", "5.1.1", "5.0.0", "bounce", "hard", "", "", ""},
		}},
		{"exim-5.4.3-envid-orcpt.eml", []want{
			{routeB, "failed", "5.4.3", "5.0.0", "bounce", "hard", "exim-envid-route-b", "", ""},
		}},
		{"exim-4.4.3-delayed.eml", []want{
			{laterC, "delayed", "4.4.3", "4.0.0", "delay", "soft", "exim-envid-later-c", "", ""},
		}},
		{"exim-4.4.3-failed.eml", []want{
			{laterC, "failed", "4.4.3", "5.0.0", "bounce", "soft", "exim-envid-later-c", "", ""},
		}},

		// The shapes of shapes_test.go. An alias expanded to members:
		// Postfix names each member "(expanded from <list@alias.test>)"
		// with the alias as Original-Recipient.
		{"postfix-alias-5.1.1.eml", []want{
			{unknownM1, "failed", "5.1.1", "5.1.1", "bounce", "hard", "", "list@alias.test", "rfc3464"},
			{fullM3, "failed", "5.2.2", "5.2.2", "bounce", "soft", "", "list@alias.test", "rfc3464+full-soft"},
		}},
		{"postfix-forward-5.1.1.eml", []want{
			{unknownF, "failed", "5.1.1", "5.1.1", "bounce", "hard", "", "fwd@local.test", "rfc3464"},
		}},
		// Exim's report names the alias as Final-Recipient of each
		// member, its text the member "(generated from list@alias.test)",
		// in another order: the member is the failed recipient (+expanded).
		{"exim-alias-5.1.1.eml", []want{
			{unknownM1, "failed", "5.1.1", "5.0.0", "bounce", "hard", "", "list@alias.test", "rfc3464+expanded"},
			{fullM3, "failed", "5.2.2", "5.0.0", "bounce", "soft", "", "list@alias.test", "rfc3464+expanded+full-soft"},
		}},
		// An alias of an alias: Exim's report names the first alias, its
		// text "(ultimately generated from chain@alias.test)".
		{"postfix-chain-5.1.1.eml", []want{
			{unknownC, "failed", "5.1.1", "5.1.1", "bounce", "hard", "", chain, "rfc3464"},
		}},
		{"exim-chain-5.1.1.eml", []want{
			{unknownC, "failed", "5.1.1", "5.0.0", "bounce", "hard", "", chain, "rfc3464+expanded"},
		}},
		// A deferred member: delayed, then failed after the queue lifetime.
		{"postfix-alias-delayed.eml", []want{
			{laterM4, "delayed", "4.4.3", "4.4.3", "delay", "soft", "", "list@alias.test", "rfc3464"},
		}},
		{"postfix-alias-failed.eml", []want{
			{laterM4, "failed", "4.4.3", "4.4.3", "bounce", "soft", "", "list@alias.test", "rfc3464"},
		}},
		{"exim-alias-delayed.eml", []want{
			{laterM4, "delayed", "4.4.3", "4.0.0", "delay", "soft", "", "list@alias.test", "rfc3464+expanded"},
		}},
		{"exim-alias-failed.eml", []want{
			{laterM4, "failed", "4.4.3", "5.0.0", "bounce", "soft", "", "list@alias.test", "rfc3464+expanded"},
		}},
		{"exim-forward-5.1.1.eml", []want{
			{unknownF, "failed", "5.1.1", "5.0.0", "bounce", "hard", "", "fwd@fwd.test", "rfc3464+expanded"},
		}},
		// One message, mixed results: the refusals at once (a full
		// mailbox soft), the 4.4.3 ones delayed, then failed together.
		{"postfix-mixed-5.1.1-and-5.2.2.eml", []want{
			{unknownX, "failed", "5.1.1", "5.1.1", "bounce", "hard", "", "", "rfc3464"},
			{fullX, "failed", "5.2.2", "5.2.2", "bounce", "soft", "", "", "rfc3464+full-soft"},
		}},
		{"postfix-mixed-delayed.eml", []want{
			{laterX, "delayed", "4.4.3", "4.4.3", "delay", "soft", "", "", ""},
			{laterY, "delayed", "4.4.3", "4.4.3", "delay", "soft", "", "", ""},
		}},
		{"postfix-mixed-failed.eml", []want{
			{laterX, "failed", "4.4.3", "4.4.3", "bounce", "soft", "", "", ""},
			{laterY, "failed", "4.4.3", "4.4.3", "bounce", "soft", "", "", ""},
		}},
		{"exim-mixed-5.1.1-and-5.2.2.eml", []want{
			{unknownX, "failed", "5.1.1", "5.0.0", "bounce", "hard", "", "", "rfc3464"},
			{fullX, "failed", "5.2.2", "5.0.0", "bounce", "soft", "", "", "rfc3464+full-soft"},
		}},
		{"exim-mixed-delayed.eml", []want{
			{laterX, "delayed", "4.4.3", "4.0.0", "delay", "soft", "", "", ""},
			{laterY, "delayed", "4.4.3", "4.0.0", "delay", "soft", "", "", ""},
		}},
		{"exim-mixed-failed.eml", []want{
			{laterX, "failed", "4.4.3", "5.0.0", "bounce", "soft", "", "", ""},
			{laterY, "failed", "4.4.3", "5.0.0", "bounce", "soft", "", "", ""},
		}},
		// An address of the MTA's own domain that does not exist: Postfix's
		// local(8) says "unknown user" (5.1.1), Exim "Unrouteable
		// address" with its generic 5.0.0 and no remote reply.
		{"postfix-local-unknown.eml", []want{
			{"no-such-user@local.test", "failed", "5.1.1", "5.1.1", "bounce", "hard", "", "", "rfc3464"},
		}},
		{"exim-local-unknown.eml", []want{
			{"no-such-user@alias.test", "failed", "5.0.0", "5.0.0", "bounce", "hard", "", "", "rfc3464"},
		}},
		// Postfix with soft_bounce = yes: Status 4.1.1 for the stub's 550
		// 5.1.1, delayed (+retrying) and then failed, where the remote's
		// reply outranks the Status field's class.
		{"postfix-soft-bounce-delayed.eml", []want{
			{"unknown-s@soft.test", "delayed", "4.1.1", "4.1.1", "delay", "soft", "", "", "rfc3464+retrying"},
		}},
		{"postfix-soft-bounce-failed.eml", []want{
			{"unknown-s@soft.test", "failed", "5.1.1", "4.1.1", "bounce", "hard", "", "", "rfc3464"},
		}},
		// Refused after DATA as too large.
		{"postfix-5.3.4-too-big.eml", []want{
			{bigY, "failed", "5.3.4", "5.3.4", "bounce", "hard", "", "", "rfc3464"},
		}},
		{"exim-5.3.4-too-big.eml", []want{
			{bigY, "failed", "5.3.4", "5.0.0", "bounce", "hard", "", "", "rfc3464"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			out, err := exec.Command(bouncerBin, "parse", "--json", filepath.Join("testdata", tt.file)).Output()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("bouncer parse %s: %v: %s", tt.file, err, ee.Stderr)
			}
			tcheck(t, err, "bouncer parse")
			var got []want
			dec := json.NewDecoder(bytes.NewReader(out))
			for dec.More() {
				var r struct {
					Recipient          string `json:"recipient"`
					Action             string `json:"action"`
					Status             string `json:"status"`
					StatusLiteral      string `json:"status_literal"`
					Kind               string `json:"kind"`
					Class              string `json:"class"`
					OriginalEnvelopeID string `json:"original_envelope_id"`
					OriginalRecipient  string `json:"original_recipient"`
					DecodedBy          string `json:"decoded_by"`
				}
				tcheck(t, dec.Decode(&r), "decoding bouncer parse output")
				got = append(got, want{r.Recipient, r.Action, r.Status, r.StatusLiteral, r.Kind, r.Class, r.OriginalEnvelopeID,
					r.OriginalRecipient, r.DecodedBy})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d records, want %d:\n%s", len(got), len(tt.want), out)
			}
			for _, w := range tt.want {
				found := false
				for _, g := range got {
					if w.orig == "" {
						g.orig = ""
					}
					if w.by == "" {
						g.by = ""
					}
					found = found || g == w
				}
				if !found {
					t.Errorf("no record %+v in\n%s", w, out)
				}
			}
		})
	}
}
