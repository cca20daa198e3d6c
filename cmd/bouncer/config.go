package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/bouncer/bouncer/policy"
	"github.com/bouncer/bouncer/server"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/verp"
)

// Config is the whole configuration file. It is the source of truth:
// config.example.toml lists every key with its default, and a test decodes
// that file strictly against this struct.
type Config struct {
	SMTP   SMTPConfig   `toml:"smtp"`
	VERP   VERPConfig   `toml:"verp"`
	HTTP   HTTPConfig   `toml:"http"`
	Store  StoreConfig  `toml:"store"`
	Log    LogConfig    `toml:"log"`
	Policy PolicyConfig `toml:"policy"`
	MX     MXConfig     `toml:"mx"`
	Push   PushConfig   `toml:"push"`
	Storm  StormConfig  `toml:"storm"`
	// Mailbox lists the IMAP folders read for bounces ([[mailbox]]).
	Mailbox []MailboxConfig `toml:"mailbox"`

	file string // the file it was read from, "" for the defaults (for hints)
}

// StormConfig configures the storm guard: when more than Threshold
// distinct addresses of one domain, or behind one remote or reporting MTA,
// would be suppressed with the same status within Window, new
// suppressions of the domain are held for the operator ("bouncer storm").
type StormConfig struct {
	Threshold int      `toml:"threshold"`
	Window    Duration `toml:"window"`
	// HoldFor is how long a storm lasts unless the operator ends it; then
	// its holds are dropped and the next bounce is judged afresh.
	HoldFor Duration `toml:"hold_for"`
}

// MXConfig configures MX checks ("bouncer mx").
type MXConfig struct {
	Resolver string   `toml:"resolver"`
	Port     int      `toml:"port"`
	Timeout  Duration `toml:"timeout"`
	MaxMX    int      `toml:"max_mx"`
	MaxAddrs int      `toml:"max_addrs"`
	IPv6     bool     `toml:"ipv6"`
	// Recheck says whether serve re-checks routes in the background:
	// "auto" (only when smtp.listen is not a loopback address, so a
	// quickstart sends nothing off the machine), "on" or "off".
	// RecheckInterval is how often (0 switches it off too);
	// RecheckConcurrency bounds the checks run at once; LiftOnRecovery
	// removes the 5.4.x policy suppressions of a domain whose route works
	// again.
	Recheck            string   `toml:"recheck"`
	RecheckInterval    Duration `toml:"recheck_interval"`
	RecheckConcurrency int      `toml:"recheck_concurrency"`
	LiftOnRecovery     bool     `toml:"lift_on_recovery"`
}

// PolicyConfig is the table that turns a record into a suppression
// verdict (package policy). A file that lists any [[policy.rules]] replaces
// the whole default table.
type PolicyConfig struct {
	Rules []policy.Rule `toml:"rules"`
}

// SMTPConfig configures the inbound SMTP listener and its limits.
type SMTPConfig struct {
	Listen          string   `toml:"listen"`
	Hostname        string   `toml:"hostname"`
	Domains         []string `toml:"domains"`
	MaxMessageBytes int64    `toml:"max_message_bytes"`
	MaxDataMemory   int64    `toml:"max_data_memory"`
	MaxRecipients   int      `toml:"max_recipients"`
	MaxLineLength   int      `toml:"max_line_length"`
	ReadTimeout     Duration `toml:"read_timeout"`
	WriteTimeout    Duration `toml:"write_timeout"`
	SessionTimeout  Duration `toml:"session_timeout"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	SaveTimeout     Duration `toml:"save_timeout"`
	MinDataRate     int64    `toml:"min_data_rate"`
	DataRateGrace   Duration `toml:"data_rate_grace"`
	MaxConns        int      `toml:"max_conns"`
	MaxConnsPerIP   int      `toml:"max_conns_per_ip"`
	MaxConnsPerNet  int      `toml:"max_conns_per_net"`
	// StressIdleTimeout is the idle limit between commands once 4/5 of
	// MaxConns are open (server.Options).
	StressIdleTimeout Duration `toml:"stress_idle_timeout"`
	// MessageRate (per minute), MessageBurst and ByteRate (bytes per
	// minute) bound what one client network may send.
	MessageRate  float64 `toml:"message_rate"`
	MessageBurst int     `toml:"message_burst"`
	ByteRate     int64   `toml:"byte_rate"`
	// PushRate is how many push events per hour the messages of one
	// client network may cause; past it their events are held on the
	// dead-letter list (server.Options.PushRate).
	PushRate float64 `toml:"push_rate"`
	// TrustedRelays are CIDRs of relays whose bad tokens never ban them
	// and to which the message and byte rates do not apply.
	TrustedRelays  []string `toml:"trusted_relays"`
	ConnectRate    float64  `toml:"connect_rate"`
	ConnectBurst   int      `toml:"connect_burst"`
	MaxBadCommands int      `toml:"max_bad_commands"`
	TLSCertFile    string   `toml:"tls_cert_file"`
	TLSKeyFile     string   `toml:"tls_key_file"`
}

// VERPConfig says how envelope recipients encode the bounced address, and
// the keys of signed return paths (verp/FORMAT.md).
type VERPConfig struct {
	Delimiter  string    `toml:"delimiter"`
	Equals     string    `toml:"equals"`
	Prefix     string    `toml:"prefix"`
	Keys       []VERPKey `toml:"keys"`
	SignKey    string    `toml:"sign_key"`
	ExpiryDays int       `toml:"expiry_days"`
	// Required is nil when the file does not set it: then it is true
	// when smtp.listen is off loopback (Config.verpRequired).
	Required *bool       `toml:"required"`
	Guard    GuardConfig `toml:"guard"`
}

// VERPKey is one signing key.
type VERPKey struct {
	ID     string `toml:"id"`
	Secret string `toml:"secret"`
}

// GuardConfig bounds clients that send bad signed tokens.
type GuardConfig struct {
	MaxBad int      `toml:"max_bad"`
	Window Duration `toml:"window"`
	Ban    Duration `toml:"ban"`
}

// HTTPConfig configures the admin HTTP API.
type HTTPConfig struct {
	Listen string   `toml:"listen"`
	Tokens []string `toml:"tokens"`
	// Hosts are the names accepted in the Host header besides localhost,
	// loopback addresses and the listen address; "*" accepts any.
	Hosts []string `toml:"hosts"`
}

// StoreConfig configures the database: the embedded bbolt file, or a
// PostgreSQL server shared by several MX hosts.
type StoreConfig struct {
	// Driver is "bbolt" (the default, one file) or "postgres".
	Driver string `toml:"driver"`
	// URL is the PostgreSQL connection string (driver "postgres").
	URL string `toml:"url"`
	// PasswordFile holds the PostgreSQL password (first line), so that it
	// stays out of this file; PGPASSWORD works too.
	PasswordFile string `toml:"password_file"`
	// Schema is the PostgreSQL schema bouncer's tables live in.
	Schema      string   `toml:"schema"`
	Path        string   `toml:"path"`
	LockTimeout Duration `toml:"lock_timeout"`
	// CommitInterval selected the write-ahead log of older versions,
	// which is gone: the key is still read, so that their config files
	// load, and ignored with a warning (Config.warnings). nil when the
	// file does not set it.
	CommitInterval *Duration `toml:"commit_interval"`
	// RawRetention is how long raw messages are kept (0: forever).
	RawRetention Duration `toml:"raw_retention"`
	// MinFreeBytes is the free space the database's file system must
	// keep; below it SMTP intake answers 451 4.3.1 (0: no floor).
	MinFreeBytes int64 `toml:"min_free_bytes"`
	// DedupeWindow is how long a report is remembered as seen.
	DedupeWindow Duration `toml:"dedupe_window"`
	// PruneInterval is how often serve prunes (0: never).
	PruneInterval Duration `toml:"prune_interval"`
}

// LogConfig configures logging.
type LogConfig struct {
	Level     string `toml:"level"`
	SMTPDebug bool   `toml:"smtp_debug"`
}

func defaultConfig() Config {
	return Config{
		SMTP: SMTPConfig{
			Listen:            "127.0.0.1:2525",
			Hostname:          "localhost",
			Domains:           []string{},
			MaxMessageBytes:   10 << 20,
			MaxDataMemory:     24 << 20,
			MaxRecipients:     10,
			MaxLineLength:     4000,
			ReadTimeout:       Duration(5 * time.Minute),
			WriteTimeout:      Duration(time.Minute),
			SessionTimeout:    Duration(30 * time.Minute),
			ShutdownTimeout:   Duration(30 * time.Second),
			SaveTimeout:       Duration(30 * time.Second),
			MinDataRate:       1024,
			DataRateGrace:     Duration(30 * time.Second),
			MaxConns:          500,
			MaxConnsPerIP:     10,
			MaxConnsPerNet:    50,
			StressIdleTimeout: Duration(10 * time.Second),
			MessageRate:       300,
			MessageBurst:      100,
			ByteRate:          100 << 20,
			PushRate:          2000,
			TrustedRelays:     []string{"127.0.0.0/8", "::1/128"},
			ConnectRate:       120,
			ConnectBurst:      30,
			MaxBadCommands:    10,
		},
		VERP: VERPConfig{
			Delimiter: "+", Equals: "=", Keys: []VERPKey{}, ExpiryDays: verp.DefaultExpiryDays,
			Guard: GuardConfig{MaxBad: 5, Window: Duration(10 * time.Minute), Ban: Duration(time.Hour)},
		},
		HTTP: HTTPConfig{Listen: "127.0.0.1:8025", Tokens: []string{}, Hosts: []string{}},
		Store: StoreConfig{Driver: "bbolt", Schema: "bouncer", Path: "bouncer.db", LockTimeout: Duration(5 * time.Second),
			RawRetention: Duration(DefaultRawRetention), MinFreeBytes: 256 << 20,
			DedupeWindow: Duration(store.DefaultDedupeWindow), PruneInterval: Duration(time.Hour)},
		Log:    LogConfig{Level: "info"},
		Policy: PolicyConfig{Rules: policy.DefaultRules()},
		Push:   defaultPush(),
		MX: MXConfig{Port: 25, Timeout: Duration(10 * time.Second), MaxMX: 10, MaxAddrs: 16, IPv6: true,
			Recheck: "auto", RecheckInterval: Duration(24 * time.Hour), RecheckConcurrency: 4},
		Storm: StormConfig{Threshold: 20, Window: Duration(time.Hour), HoldFor: Duration(store.DefaultStormHoldFor)},
	}
}

// DefaultRawRetention is how long raw messages are kept unless the config
// says otherwise: long enough to re-decode a season of bounces with a
// better parser, short enough that raw messages cannot fill a disk unseen.
const DefaultRawRetention = 90 * day

// loadConfig reads path over the defaults. An empty path gives the
// defaults. Unknown keys are an error, so a typo cannot silently fall back
// to a default. Relative paths in the file are resolved against its folder.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, cfg.validate()
	}
	cfg.file = path
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			return cfg, fmt.Errorf("config %s: unknown keys:\n%s", path, sm.String())
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			if k := de.Key(); len(k) > 0 {
				return cfg, fmt.Errorf("config %s:%d:%d: %s: %v", path, row, col, strings.Join(k, "."), de)
			}
			return cfg, fmt.Errorf("config %s:%d:%d: %v", path, row, col, de)
		}
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	var raw map[string]any
	if err := toml.Unmarshal(data, &raw); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := checkDurationUnits(raw, reflect.TypeFor[Config](), ""); err != nil {
		return cfg, err
	}
	for _, p := range []*string{&cfg.Store.Path, &cfg.Store.PasswordFile, &cfg.SMTP.TLSCertFile, &cfg.SMTP.TLSKeyFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	cfg.resolveMailboxPaths(filepath.Dir(path))
	for i := range cfg.Mailbox {
		cfg.Mailbox[i] = cfg.Mailbox[i].withDefaults()
	}
	return cfg, cfg.validate()
}

func (c *Config) validate() error {
	if c.SMTP.Listen == "" {
		return errors.New("config: smtp.listen is empty")
	}
	switch c.Store.Driver {
	case "bbolt":
		if c.Store.Path == "" {
			return errors.New("config: store.path is empty")
		}
	case "postgres":
		if c.Store.URL == "" {
			return errors.New("config: store.driver is postgres and store.url is empty")
		}
	default:
		return fmt.Errorf("config: store.driver %q: want bbolt or postgres", c.Store.Driver)
	}
	if err := c.checkBounds(); err != nil {
		return err
	}
	if c.MX.Recheck != "auto" && c.MX.Recheck != "on" && c.MX.Recheck != "off" {
		return fmt.Errorf("config: mx.recheck %q: want auto, on or off", c.MX.Recheck)
	}
	if err := c.Push.validate(); err != nil {
		return err
	}
	if (c.SMTP.TLSCertFile == "") != (c.SMTP.TLSKeyFile == "") {
		return errors.New("config: smtp.tls_cert_file and smtp.tls_key_file go together")
	}
	// The oldest message still streaming may always use this much of the
	// DATA budget; a smaller budget could never take a message of the
	// largest size.
	if need := server.DataReserve(c.SMTP.MaxMessageBytes); c.SMTP.MaxDataMemory < need {
		return fmt.Errorf("config: smtp.max_data_memory %d is too small for smtp.max_message_bytes %d: want at least %d",
			c.SMTP.MaxDataMemory, c.SMTP.MaxMessageBytes, need)
	}
	if len(c.SMTP.Domains) == 0 && !isLoopback(c.SMTP.Listen) {
		return fmt.Errorf("config: smtp.domains is empty, which accepts mail for any domain; "+
			"that is only allowed on a loopback address, not %q", c.SMTP.Listen)
	}
	if c.verpRequired() && len(c.VERP.Keys) == 0 {
		if c.VERP.Required == nil {
			return fmt.Errorf("config: smtp.listen %q is off loopback, so signed return paths are required (verp.required) "+
				"and verp.keys is empty: add the [verp] table that `bouncer verp keygen` prints, "+
				"or set verp.required = false to let unsigned bounces suppress", c.SMTP.Listen)
		}
		return errors.New("config: verp.required needs verp.keys")
	}
	if err := c.verpOptions().Validate(); err != nil {
		return fmt.Errorf("config: verp: %w", err)
	}
	if _, err := policy.Compile(c.Policy.Rules); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.VERP.SignKey != "" && !c.hasKey(c.VERP.SignKey) {
		return fmt.Errorf("config: verp.sign_key %q is not one of verp.keys", c.VERP.SignKey)
	}
	if c.SMTP.ByteRate < c.SMTP.MaxMessageBytes {
		return fmt.Errorf("config: smtp.byte_rate %d is below smtp.max_message_bytes %d: a message of the largest size could never pass",
			c.SMTP.ByteRate, c.SMTP.MaxMessageBytes)
	}
	if _, err := c.trustedRelays(); err != nil {
		return err
	}
	if c.HTTP.Listen != "" && len(c.HTTP.Tokens) == 0 && !isLoopback(c.HTTP.Listen) {
		return fmt.Errorf("config: http.listen %q is not a loopback address: set http.tokens", c.HTTP.Listen)
	}
	return c.validateMailboxes()
}

// Bounds of the numeric keys. Every size and count an attacker's traffic
// is measured against has an upper bound as well as a lower one, so that
// a typo cannot switch a limit off in effect (a 2^63 message limit) or
// make every client fail (a 5ns timeout).
const (
	maxConnsLimit   = 100_000
	maxDataMemLimit = 64 << 30
	day             = 24 * time.Hour
)

// intBound is the range of one numeric key; durBound of one duration key.
type intBound struct {
	name    string
	v       float64
	lo, hi  float64
	offZero bool // 0 is allowed too and switches the feature off
}

type durBound struct {
	name    string
	v       Duration
	lo, hi  time.Duration
	offZero bool
}

// checkBounds checks every numeric and duration key against its range,
// and reports the first one out of range in one line.
func (c *Config) checkBounds() error {
	s := &c.SMTP
	for _, b := range []intBound{
		{"smtp.max_message_bytes", float64(s.MaxMessageBytes), 1, server.MaxMessageBytesLimit, false},
		{"smtp.max_data_memory", float64(s.MaxDataMemory), 1, maxDataMemLimit, false},
		{"smtp.max_recipients", float64(s.MaxRecipients), 1, 1000, false},
		{"smtp.max_line_length", float64(s.MaxLineLength), 1000, 1 << 20, false},
		{"smtp.min_data_rate", float64(s.MinDataRate), 1, 10 << 20, false},
		{"smtp.max_conns", float64(s.MaxConns), 1, maxConnsLimit, false},
		{"smtp.max_conns_per_ip", float64(s.MaxConnsPerIP), 1, maxConnsLimit, false},
		{"smtp.connect_rate", s.ConnectRate, 0.001, 1e7, false},
		{"smtp.connect_burst", float64(s.ConnectBurst), 1, maxConnsLimit, false},
		{"smtp.max_bad_commands", float64(s.MaxBadCommands), 1, 1000, false},
		{"smtp.max_conns_per_net", float64(s.MaxConnsPerNet), 1, maxConnsLimit, false},
		{"smtp.message_rate", s.MessageRate, 0.001, 1e7, false},
		{"smtp.message_burst", float64(s.MessageBurst), 1, 1e6, false},
		{"smtp.byte_rate", float64(s.ByteRate), 1 << 20, 1 << 40, false},
		{"smtp.push_rate", s.PushRate, 1, 1e9, false},
		{"store.min_free_bytes", float64(c.Store.MinFreeBytes), 1 << 20, 1 << 50, true},
		{"verp.expiry_days", float64(c.VERP.ExpiryDays), -1, 3650, false},
		{"verp.guard.max_bad", float64(c.VERP.Guard.MaxBad), 1, 10_000, false},
		{"mx.port", float64(c.MX.Port), 1, 65535, false},
		{"mx.max_mx", float64(c.MX.MaxMX), 1, 100, false},
		{"mx.max_addrs", float64(c.MX.MaxAddrs), 1, 1000, false},
		{"mx.recheck_concurrency", float64(c.MX.RecheckConcurrency), 1, 1000, false},
		{"storm.threshold", float64(c.Storm.Threshold), 1, store.MaxStormThreshold, true},
		{"push.concurrency", float64(c.Push.Concurrency), 1, 1000, false},
		{"push.max_attempts", float64(c.Push.MaxAttempts), 1, 10_000, false},
	} {
		if err := b.check(); err != nil {
			return err
		}
	}
	for _, b := range []durBound{
		{"smtp.read_timeout", s.ReadTimeout, time.Second, time.Hour, false},
		{"smtp.write_timeout", s.WriteTimeout, time.Second, time.Hour, false},
		{"smtp.session_timeout", s.SessionTimeout, time.Second, day, false},
		{"smtp.shutdown_timeout", s.ShutdownTimeout, time.Second, time.Hour, false},
		{"smtp.save_timeout", s.SaveTimeout, time.Second, 10 * time.Minute, false},
		{"smtp.data_rate_grace", s.DataRateGrace, time.Second, time.Hour, false},
		{"smtp.stress_idle_timeout", s.StressIdleTimeout, time.Second, time.Hour, false},
		{"verp.guard.window", c.VERP.Guard.Window, time.Second, 30 * day, false},
		{"verp.guard.ban", c.VERP.Guard.Ban, time.Second, 30 * day, false},
		{"store.lock_timeout", c.Store.LockTimeout, time.Millisecond, 10 * time.Minute, false},
		{"store.raw_retention", c.Store.RawRetention, time.Hour, 100 * 365 * day, true},
		{"store.dedupe_window", c.Store.DedupeWindow, time.Minute, 10 * 365 * day, false},
		{"store.prune_interval", c.Store.PruneInterval, time.Second, 30 * day, true},
		{"mx.timeout", c.MX.Timeout, time.Millisecond, 10 * time.Minute, false},
		{"mx.recheck_interval", c.MX.RecheckInterval, time.Millisecond, 365 * day, true},
		{"storm.window", c.Storm.Window, time.Second, 30 * day, false},
		{"storm.hold_for", c.Storm.HoldFor, time.Minute, 30 * day, false},
		{"push.timeout", c.Push.Timeout, time.Millisecond, 10 * time.Minute, false},
		{"push.min_backoff", c.Push.MinBackoff, time.Millisecond, 7 * day, false},
		{"push.max_backoff", c.Push.MaxBackoff, time.Millisecond, 7 * day, false},
	} {
		if err := b.check(); err != nil {
			return err
		}
	}
	return nil
}

func (b intBound) check() error {
	if b.offZero && b.v == 0 || b.v >= b.lo && b.v <= b.hi {
		return nil
	}
	off := ""
	if b.offZero {
		off = " (or 0 for off)"
	}
	return fmt.Errorf("config: %s = %v: want %v to %v%s", b.name, b.v, b.lo, b.hi, off)
}

func (b durBound) check() error {
	v := time.Duration(b.v)
	if b.offZero && v == 0 || v >= b.lo && v <= b.hi {
		return nil
	}
	off := ""
	if b.offZero {
		off = " (or 0s for off)"
	}
	return fmt.Errorf("config: %s = %s: want %s to %s%s", b.name, v, fmtDur(b.lo), fmtDur(b.hi), off)
}

// fmtDur writes whole days as such ("30d" reads better than "720h0m0s").
func fmtDur(d time.Duration) string {
	if d >= day && d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	return d.String()
}

// checkDurationUnits refuses a duration key given as a bare number: TOML
// decodes read_timeout = 5 into the Duration as 5 nanoseconds, which
// would time every client out. raw is the file decoded into maps.
func checkDurationUnits(raw map[string]any, typ reflect.Type, prefix string) error {
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := f.Tag.Get("toml")
		v, ok := raw[name]
		if !ok || name == "" || name == "-" {
			continue
		}
		switch {
		case f.Type == reflect.TypeFor[Duration]() || f.Type == reflect.TypeFor[*Duration]():
			if _, isStr := v.(string); !isStr {
				return fmt.Errorf("config: %s%s = %v: a duration needs a unit, e.g. \"%vs\"", prefix, name, v, v)
			}
		case f.Type.Kind() == reflect.Struct:
			if m, isMap := v.(map[string]any); isMap {
				if err := checkDurationUnits(m, f.Type, prefix+name+"."); err != nil {
					return err
				}
			}
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			// An array of tables ([[mailbox]]).
			list, _ := v.([]any)
			for _, e := range list {
				if m, isMap := e.(map[string]any); isMap {
					if err := checkDurationUnits(m, f.Type.Elem(), prefix+name+"."); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// warnings are what serve logs at startup about keys the file sets that
// no longer do anything, one line each.
func (c *Config) warnings() []string {
	var w []string
	if c.Store.CommitInterval != nil {
		w = append(w, fmt.Sprintf("config: store.commit_interval (%s) is ignored: the write-ahead log was removed, every group of deliveries is committed to the database file before its 250; delete the key", time.Duration(*c.Store.CommitInterval)))
	}
	return w
}

// verpOptions turns the config into the decoder's options.
func (c *Config) verpOptions() verp.Options {
	o := verp.Options{
		Delimiter:  c.VERP.Delimiter,
		Equals:     c.VERP.Equals,
		Prefix:     c.VERP.Prefix,
		ExpiryDays: c.VERP.ExpiryDays,
		Required:   c.verpRequired(),
	}
	for _, k := range c.VERP.Keys {
		o.Keys = append(o.Keys, verp.Key{ID: k.ID, Secret: k.Secret})
	}
	return o
}

// apiHosts are the Host names the admin API accepts besides localhost
// and loopback addresses (api.Handler.WithHosts): http.hosts and the
// listen address. Off loopback, where tokens are required so a browser
// page cannot use the API anyway, an empty http.hosts accepts any name.
func (c *Config) apiHosts() []string {
	hosts := append([]string(nil), c.HTTP.Hosts...)
	host, _, err := net.SplitHostPort(c.HTTP.Listen)
	if err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			hosts = append(hosts, host)
		}
	}
	if len(c.HTTP.Hosts) == 0 && c.HTTP.Listen != "" && !isLoopback(c.HTTP.Listen) {
		hosts = append(hosts, "*")
	}
	return hosts
}

// verpRequired is verp.required, or when the file does not set it,
// whether smtp.listen is off loopback: on the internet anyone can send a
// forged DSN to an unsigned return path and suppress any address (issue
// 21, finding 1).
func (c *Config) verpRequired() bool {
	if c.VERP.Required != nil {
		return *c.VERP.Required
	}
	return !isLoopback(c.SMTP.Listen)
}

// trustedRelays parses smtp.trusted_relays (CIDRs, or single addresses).
func (c *Config) trustedRelays() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.SMTP.TrustedRelays {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("config: smtp.trusted_relays: %q: want a CIDR such as 192.0.2.0/24", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (c *Config) hasKey(id string) bool {
	for _, k := range c.VERP.Keys {
		if strings.EqualFold(k.ID, id) {
			return true
		}
	}
	return false
}

// isLoopback reports whether a listen address binds only loopback
// interfaces. An empty host ("":2525) binds every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Duration is a time.Duration written as a string such as "30s" in TOML.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}
