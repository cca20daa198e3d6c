package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// writeCert writes a self-signed certificate with the given serial number
// and its key as PEM files.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tcheck(t, err, "generating key")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "bouncer.test"},
		DNSNames:     []string{"bouncer.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	tcheck(t, err, "creating certificate")
	kder, err := x509.MarshalECPrivateKey(key)
	tcheck(t, err, "marshalling key")
	tcheck(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600), "writing cert")
	tcheck(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600), "writing key")
}

// servedSerial does STARTTLS and returns the serial of the certificate
// the server presented.
func servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	c, err := smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	tcheck(t, err, "STARTTLS")
	defer c.Close()
	tcheck(t, c.Noop(), "NOOP over TLS") // completes the handshake
	st, ok := c.TLSConnectionState()
	if !ok || len(st.PeerCertificates) == 0 {
		t.Fatal("no TLS state after STARTTLS")
	}
	return st.PeerCertificates[0].SerialNumber.Int64()
}

func TestStartTLSAndReloadOnHUP(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, certFile, keyFile, 1)
	ts := newTestServerWith(t, fmt.Sprintf("tls_cert_file = %q\ntls_key_file = %q\n", certFile, keyFile), "")

	if got := servedSerial(t, ts.smtpAddr); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}
	// A message still goes through over TLS.
	c, err := smtp.DialStartTLS(ts.smtpAddr, &tls.Config{InsecureSkipVerify: true})
	tcheck(t, err, "STARTTLS")
	tcheck(t, c.SendMail("", []string{"bounces+user=dead.test@localhost"}, bytes.NewReader(readTestdata(t, "postfix-543.eml"))), "sending over TLS")
	c.Close()

	writeCert(t, certFile, keyFile, 2)
	tcheck(t, syscall.Kill(os.Getpid(), syscall.SIGHUP), "sending SIGHUP")
	deadline := time.Now().Add(20 * time.Second)
	for servedSerial(t, ts.smtpAddr) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the new certificate was not served within 20s of SIGHUP")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
