// Package integration runs bouncer against real MTAs: a private Postfix
// instance and an Exim daemon on loopback generate real DSNs (RFC 3464)
// into the built bouncer binary, and the tests read the records back
// through "bouncer query --json" and "bouncer suppressed".
//
// The tests are behind the "integration" build tag because they need root,
// Postfix and an unpacked Exim; .ci/run installs them and runs
//
//	go test -tags integration -v ./integration/
//
// Besides the scenario (scenario_test.go) each MTA makes the shapes of
// shapes_test.go: an alias expanded to several members, a forwarding
// address, one message whose recipients fail in different ways, and a
// message refused as too large.
//
// With -update they save the DSNs they received into testdata/*.eml,
// which TestSamples then checks through "bouncer parse" on any machine.
// Without the MTAs the MTA tests skip with the reason. The MTA configs in
// testdata are small and commented; README-postfix.md shows the Postfix
// lines a bouncer user copies.
package integration
