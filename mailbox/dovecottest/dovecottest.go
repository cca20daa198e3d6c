// Package dovecottest runs a private Dovecot IMAP server on loopback for
// tests: its own config, passwd-file and maildir in t.TempDir(), one test
// user, an IMAP port (plain text and STARTTLS) and an IMAPS port with a
// self-signed certificate for 127.0.0.1. A test is skipped when dovecot is
// not installed (Debian: dovecot-imapd), and fails instead with CI=true.
package dovecottest

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
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// The test user of every private Dovecot.
const (
	User     = "bounces"
	Password = "s3cret-for-tests"
)

// Server is a private Dovecot on loopback.
type Server struct {
	t                 testing.TB
	dir, conf         string
	port, tlsPort     int
	roots             *x509.CertPool
	cmd               *exec.Cmd
	exited            chan struct{}
	mailUser, mailGrp string
	// CAFile is the PEM certificate of the server, its own CA.
	CAFile string
}

// Start starts one, stopped at the end of the test, or skips the test
// when dovecot is not installed (fails instead with CI=true).
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("dovecot"); err != nil {
		if _, err2 := os.Stat("/usr/sbin/dovecot"); err2 != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("dovecot is not installed (apt-get install dovecot-imapd), and CI=true")
			}
			t.Skip("dovecot is not installed (apt-get install dovecot-imapd): skipping the IMAP tests")
		}
	}
	d := &Server{t: t, dir: t.TempDir()}
	d.setUsers()
	d.port, d.tlsPort = freePort(t), freePort(t)
	d.writeFiles()
	d.Start()
	t.Cleanup(d.Stop)
	return d
}

// setUsers picks the users Dovecot runs as. As root, its login processes
// must not be root and mail may not be accessed as root: the Debian
// package's dovenull and dovecot users serve, and the temp dirs are opened
// to them. Otherwise everything runs as the current user.
func (d *Server) setUsers() {
	if os.Getuid() != 0 {
		u, err := user.Current()
		tcheck(d.t, err, "current user")
		g, err := user.LookupGroupId(u.Gid)
		tcheck(d.t, err, "current group")
		d.mailUser, d.mailGrp = u.Username, g.Name
		return
	}
	d.mailUser, d.mailGrp = "dovecot", "dovecot"
	// t.TempDir is a numbered folder in a folder of the test's own, both
	// private to root.
	for _, p := range []string{d.dir, filepath.Dir(d.dir)} {
		tcheck(d.t, os.Chmod(p, 0o755), "opening the temp dir to dovecot")
	}
}

func (d *Server) loginUser() string {
	if os.Getuid() == 0 {
		return "dovenull"
	}
	return d.mailUser
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "finding a free port")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (d *Server) writeFiles() {
	dir := d.dir
	for _, sub := range []string{"run", "state", "mail"} {
		tcheck(d.t, os.MkdirAll(filepath.Join(dir, sub), 0o755), "making "+sub)
	}
	if os.Getuid() == 0 {
		u, err := user.Lookup(d.mailUser)
		tcheck(d.t, err, "looking up "+d.mailUser)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		tcheck(d.t, os.Chown(filepath.Join(dir, "mail"), uid, gid), "giving the mail dir to dovecot")
	}
	certPEM, keyPEM, roots := selfSigned(d.t)
	d.roots = roots
	d.CAFile = filepath.Join(dir, "cert.pem")
	tcheck(d.t, os.WriteFile(d.CAFile, certPEM, 0o644), "writing cert")
	tcheck(d.t, os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600), "writing key")
	passwd := fmt.Sprintf("%s:{PLAIN}%s::::%s::\n", User, Password, filepath.Join(dir, "mail", User))
	tcheck(d.t, os.WriteFile(filepath.Join(dir, "passwd"), []byte(passwd), 0o644), "writing passwd")
	conf := fmt.Sprintf(`# Private Dovecot for bouncer's mailbox tests (Dovecot 2.3).
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <%[1]s/cert.pem
ssl_key = <%[1]s/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = %[2]s
default_internal_group = %[3]s
default_login_user = %[4]s
mail_uid = %[2]s
mail_gid = %[3]s
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:%[1]s/mail/%%u
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = %[5]d
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = %[6]d
    ssl = yes
  }
}
service anvil {
  chroot =
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[1]s/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[1]s/passwd
}
`, dir, d.mailUser, d.mailGrp, d.loginUser(), d.port, d.tlsPort)
	d.conf = filepath.Join(dir, "dovecot.conf")
	tcheck(d.t, os.WriteFile(d.conf, []byte(conf), 0o644), "writing dovecot.conf")
}

// Start runs dovecot in the foreground and waits for its greeting.
func (d *Server) Start() {
	d.t.Helper()
	d.cmd = exec.Command("dovecot", "-F", "-c", d.conf)
	var out bytes.Buffer
	d.cmd.Stdout, d.cmd.Stderr = &out, &out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	tcheck(d.t, d.cmd.Start(), "starting dovecot")
	d.exited = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.Addr(), time.Second)
		if err == nil {
			buf := make([]byte, 4)
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if string(buf[:n]) == "* OK" {
				return
			}
		}
		select {
		case <-d.exited:
			log, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
			d.t.Fatalf("dovecot exited: %s\n%s", out.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
			d.t.Fatalf("dovecot did not answer on %s in 15s: %v\n%s", d.Addr(), err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends dovecot (Start starts it again, on the same ports and mail) and waits until it has gone (its processes too).
func (d *Server) Stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.exited
	}
	// The master is gone; its children follow within moments.
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("tcp", d.Addr(), 100*time.Millisecond); err == nil {
			c.Close()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		break
	}
}

// Addr is the IMAP address (plain text, STARTTLS); TLSAddr the IMAPS one.
func (d *Server) Addr() string    { return fmt.Sprintf("127.0.0.1:%d", d.port) }
func (d *Server) TLSAddr() string { return fmt.Sprintf("127.0.0.1:%d", d.tlsPort) }

// Client is a logged-in test client, closed at the end of the test.
func (d *Server) Client() *imapclient.Client {
	d.t.Helper()
	c, err := imapclient.DialInsecure(d.Addr(), nil)
	tcheck(d.t, err, "dialing dovecot")
	tcheck(d.t, c.Login(User, Password).Wait(), "logging in")
	d.t.Cleanup(func() { c.Close() })
	return c
}

// Deliver appends raw to folder (created if missing), as an MTA's local
// delivery would put it there.
func (d *Server) Deliver(folder string, raw []byte) {
	d.t.Helper()
	c := d.Client()
	if folder != "INBOX" {
		c.Create(folder, nil).Wait() // exists already, or now
	}
	cmd := c.Append(folder, int64(len(raw)), nil)
	_, err := cmd.Write(raw)
	tcheck(d.t, err, "writing APPEND literal")
	tcheck(d.t, cmd.Close(), "closing APPEND")
	_, err = cmd.Wait()
	tcheck(d.t, err, "APPEND")
	c.Logout().Wait()
}

// Messages lists the UIDs and flags of the messages in folder (nil if it
// does not exist).
func (d *Server) Messages(folder string) []*imapclient.FetchMessageBuffer {
	d.t.Helper()
	c := d.Client()
	defer func() { c.Logout().Wait() }()
	if _, err := c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		return nil
	}
	found, err := c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	tcheck(d.t, err, "searching "+folder)
	uids := found.AllUIDs()
	if len(uids) == 0 {
		return []*imapclient.FetchMessageBuffer{}
	}
	msgs, err := c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, Flags: true}).Collect()
	tcheck(d.t, err, "fetching flags of "+folder)
	return msgs
}

// selfSigned makes a certificate for 127.0.0.1 and the pool that trusts it.
func selfSigned(t testing.TB) (certPEM, keyPEM []byte, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tcheck(t, err, "generating key")
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dovecot test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	tcheck(t, err, "creating certificate")
	kder, err := x509.MarshalECPrivateKey(key)
	tcheck(t, err, "marshalling key")
	cert, err := x509.ParseCertificate(der)
	tcheck(t, err, "parsing certificate")
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), roots
}

// TLSConfig trusts the test certificate.
func (d *Server) TLSConfig() *tls.Config { return &tls.Config{RootCAs: d.roots} }

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}
