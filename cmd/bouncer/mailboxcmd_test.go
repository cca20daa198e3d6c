package main

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// exampleMailbox returns config.example.toml's [[mailbox]] block with the
// comment marks taken off.
func exampleMailbox(t *testing.T) string {
	t.Helper()
	example, err := os.ReadFile("../../config.example.toml")
	tcheck(t, err, "reading example")
	i := strings.Index(string(example), "\n# [[mailbox]]\n")
	if i < 0 {
		t.Fatal("config.example.toml has no commented [[mailbox]] block")
	}
	var b strings.Builder
	for _, line := range strings.Split(string(example[i+1:]), "\n") {
		if !strings.HasPrefix(line, "# ") {
			break
		}
		b.WriteString(strings.TrimPrefix(line, "# ") + "\n")
	}
	return b.String()
}

// TestExampleMailbox: the example's [[mailbox]] block, uncommented, lists
// every key, decodes strictly, and shows the defaults of the optional ones.
func TestExampleMailbox(t *testing.T) {
	block := exampleMailbox(t)
	var got struct {
		Mailbox []MailboxConfig `toml:"mailbox"`
	}
	tcheck(t, toml.NewDecoder(strings.NewReader(block)).DisallowUnknownFields().Decode(&got), "decoding the [[mailbox]] block")
	typ := reflect.TypeFor[MailboxConfig]()
	for i := range typ.NumField() {
		if name := typ.Field(i).Tag.Get("toml"); !strings.Contains(block, "\n"+name+" = ") {
			t.Errorf("the example's [[mailbox]] does not list %s", name)
		}
	}
	if len(got.Mailbox) != 1 {
		t.Fatalf("got %d mailboxes, want 1", len(got.Mailbox))
	}
	m := got.Mailbox[0]
	if m.Name == "" || m.Host == "" || m.User == "" || m.Password == "" {
		t.Fatalf("the example leaves a required key empty: %+v", m)
	}
	m.Name, m.Host, m.User, m.Password = "", "", "", ""
	if want := defaultMailbox(); !reflect.DeepEqual(m, want) {
		t.Fatalf("the example's optional keys differ from the defaults:\n got %+v\nwant %+v", m, want)
	}
	cfg, err := loadConfig(writeConfig(t, t.TempDir(), block))
	tcheck(t, err, "loading a config with the example's [[mailbox]]")
	if o := cfg.Mailbox[0].options(); o.Addr != "imap.example.com:993" || !o.Idle {
		t.Fatalf("options %+v: want imap.example.com:993 with IDLE", o)
	}
}

// TestMailboxConfigErrors: each mistake is refused in one line naming it.
func TestMailboxConfigErrors(t *testing.T) {
	const ok = "[[mailbox]]\nname = \"b\"\nhost = \"imap.example.com\"\nuser = \"u\"\npassword = \"p\"\n"
	for _, tc := range []struct{ body, want string }{
		{"[[mailbox]]\nhost = \"h\"\nuser = \"u\"\npassword = \"p\"\n", "name"},
		{ok + ok, "twice"},
		{strings.Replace(ok, "password = \"p\"", "", 1), "password_file"},
		{ok + "password_file = \"pw\"\n", "exactly one"},
		{ok + "tls = \"none\"\n", "loopback"},
		{ok + "wait = \"push\"\n", "wait"},
		{ok + "action = \"archive\"\n", "action"},
		{ok + "poll_interval = 5\n", "unit"},
		{ok + "poll_interval = \"1h\"\n", "poll_interval"},
		{ok + "max_message_bytes = -1\n", "max_message_bytes"},
		{strings.Replace(ok, "imap.example.com", "", 1), "host"},
	} {
		_, err := loadConfig(writeConfig(t, t.TempDir(), tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: got %v, want one line about %s", tc.body, err, tc.want)
		}
	}
	cfg, err := loadConfig(writeConfig(t, t.TempDir(), strings.Replace(ok, "imap.example.com", "127.0.0.1", 1)+"tls = \"none\"\n"))
	tcheck(t, err, "plain text to loopback")
	if cfg.Mailbox[0].options().Addr != "127.0.0.1:143" {
		t.Errorf("addr %s, want 127.0.0.1:143", cfg.Mailbox[0].options().Addr)
	}
}

// TestReadmeMailboxConfig: the config of README's "No MX? Read the bounce
// mailbox" loads as it is, with its password file beside it.
func TestReadmeMailboxConfig(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	tcheck(t, err, "reading README")
	_, sec, ok := strings.Cut(string(readme), "## No MX? Read the bounce mailbox")
	_, block, ok2 := strings.Cut(sec, "```toml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README has no toml block under \"No MX? Read the bounce mailbox\"")
	}
	dir := t.TempDir()
	tcheck(t, os.WriteFile(dir+"/imap-password", []byte("app-password\n"), 0o600), "writing password file")
	cfg, err := loadConfig(writeConfig(t, dir, block))
	tcheck(t, err, "loading README's config")
	o, err := cfg.mailboxOptions(cfg.Mailbox[0])
	tcheck(t, err, "reading its password file")
	if o.Password != "app-password" || o.Addr != "imap.example.com:993" || o.TLS != "implicit" || o.NotBounceFolder != "not-bounces" {
		t.Fatalf("options %+v", o)
	}
}
