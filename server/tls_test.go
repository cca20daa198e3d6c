package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// testCert makes a self-signed certificate for mx.test.
func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tcheck(t, err, "generating key")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.test"},
		DNSNames:     []string{"mx.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	tcheck(t, err, "creating certificate")
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestStartTLS(t *testing.T) {
	opts := testOptions()
	opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	opts.MaxBadCommands = 3
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)

	c, err := smtp.DialStartTLS(ts.addr, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"})
	tcheck(t, err, "dial with STARTTLS")
	defer c.Close()
	// The bad-command count cannot read replies inside TLS; the session
	// works, and its 5xx replies are not miscounted from ciphertext.
	tcheck(t, c.Mail("", nil), "mail")
	state, ok := c.TLSConnectionState()
	if !ok || state.Version < tls.VersionTLS12 {
		t.Fatalf("TLS state %v %x, want TLS 1.2 or later", ok, state.Version)
	}
	wantCode(t, c.Rcpt("a@example.com", nil), 550, smtp.EnhancedCode{5, 7, 1})
	tcheck(t, c.Rcpt("x@"+bounceDomain, nil), "rcpt")
	c.Reset()
	_, err = send(c, "", []string{"x@" + bounceDomain}, readTestdata(t, "lhost-postfix-03.eml"))
	tcheck(t, err, "sending over TLS")
	if n := len(saver.all()); n != 1 {
		t.Fatalf("got %d deliveries, want 1", n)
	}
}

func TestStartTLSRefusesOldVersions(t *testing.T) {
	opts := testOptions()
	opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert(t)}, MinVersion: tls.VersionTLS10}
	ts := newTestServer(t, opts, &memSaver{})
	c, err := smtp.DialStartTLS(ts.addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		// The handshake may happen with the first command.
		defer c.Close()
		err = c.Mail("", nil)
	}
	if err == nil {
		t.Fatalf("TLS 1.1 handshake succeeded, want it refused")
	}
}

// TestStartTLSInjection sends a command in the same packet as STARTTLS
// (CVE-2011-0411 style). It must be thrown away, not run inside TLS.
func TestStartTLSInjection(t *testing.T) {
	opts := testOptions()
	opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	ts := newTestServer(t, opts, &memSaver{})
	c := dialRaw(t, ts.addr, nil)
	c.cmd("EHLO client.test", 250, "")
	c.write("STARTTLS\r\nMAIL FROM:<injected@attacker.test>\r\n")
	c.expect(220, "2.0.0")
	tc := tls.Client(c.nc, &tls.Config{InsecureSkipVerify: true})
	tcheck(t, tc.Handshake(), "handshake")
	tc.SetDeadline(time.Now().Add(20 * time.Second))
	sc := &rawClient{t: t, nc: tc, tc: textproto.NewConn(tc)}
	// Inside TLS the session starts over. Had the injected MAIL run, RCPT
	// would be accepted; it must get "Missing MAIL FROM".
	sc.cmd("EHLO client.test", 250, "")
	sc.cmd("RCPT TO:<x@"+bounceDomain+">", 502, "5.5.1")
	sc.cmd("MAIL FROM:<>", 250, "2.0.0")
	sc.cmd("RCPT TO:<x@"+bounceDomain+">", 250, "2.0.0")
}

// TestShutdownInsideTLS shuts the server down while a client waits inside
// TLS: the server must not write its plaintext 421 into the TLS stream (the
// client would see a corrupt record); the client only sees the end of the
// connection.
func TestShutdownInsideTLS(t *testing.T) {
	opts := testOptions()
	opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	ts := newTestServer(t, opts, &memSaver{})
	c, err := smtp.DialStartTLS(ts.addr, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"})
	tcheck(t, err, "dial with STARTTLS")
	defer c.Close()
	tcheck(t, c.Noop(), "noop inside TLS")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tcheck(t, ts.Shutdown(ctx), "shutdown")
	err = c.Noop()
	if err == nil {
		t.Fatal("NOOP after shutdown succeeded")
	}
	if strings.Contains(err.Error(), "record") || strings.Contains(err.Error(), "tls:") {
		t.Fatalf("the client saw a corrupt TLS stream: %v", err)
	}
}
