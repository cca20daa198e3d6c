package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/bouncer/bouncer/policy"
	"github.com/bouncer/bouncer/server"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
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
}

// StormConfig configures the storm guard: when more than Threshold
// distinct addresses of one domain, or behind one remote or reporting MTA,
// would be suppressed with the same status within Window, new
// suppressions of the domain are held for the operator ("bouncer storm").
type StormConfig struct {
	Threshold int      `toml:"threshold"`
	Window    Duration `toml:"window"`
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
	ConnectRate     float64  `toml:"connect_rate"`
	ConnectBurst    int      `toml:"connect_burst"`
	MaxBadCommands  int      `toml:"max_bad_commands"`
	TLSCertFile     string   `toml:"tls_cert_file"`
	TLSKeyFile      string   `toml:"tls_key_file"`
}

// VERPConfig says how envelope recipients encode the bounced address, and
// the keys of signed return paths (verp/FORMAT.md).
type VERPConfig struct {
	Delimiter  string      `toml:"delimiter"`
	Equals     string      `toml:"equals"`
	Prefix     string      `toml:"prefix"`
	Keys       []VERPKey   `toml:"keys"`
	SignKey    string      `toml:"sign_key"`
	ExpiryDays int         `toml:"expiry_days"`
	Required   bool        `toml:"required"`
	Guard      GuardConfig `toml:"guard"`
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
}

// StoreConfig configures the bbolt database.
type StoreConfig struct {
	Path        string   `toml:"path"`
	LockTimeout Duration `toml:"lock_timeout"`
	// CommitInterval is how long acknowledged deliveries may wait in the
	// write-ahead log before the database file holds them (0: no log,
	// every group is committed to the file before its 250).
	CommitInterval Duration `toml:"commit_interval"`
	// RawRetention is how long raw messages are kept (0: forever).
	RawRetention Duration `toml:"raw_retention"`
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
			Listen:          "127.0.0.1:2525",
			Hostname:        "localhost",
			Domains:         []string{},
			MaxMessageBytes: 10 << 20,
			MaxDataMemory:   24 << 20,
			MaxRecipients:   10,
			MaxLineLength:   4000,
			ReadTimeout:     Duration(5 * time.Minute),
			WriteTimeout:    Duration(time.Minute),
			SessionTimeout:  Duration(30 * time.Minute),
			ShutdownTimeout: Duration(30 * time.Second),
			SaveTimeout:     Duration(30 * time.Second),
			MinDataRate:     1024,
			DataRateGrace:   Duration(30 * time.Second),
			MaxConns:        500,
			MaxConnsPerIP:   10,
			ConnectRate:     120,
			ConnectBurst:    30,
			MaxBadCommands:  10,
		},
		VERP: VERPConfig{
			Delimiter: "+", Equals: "=", Keys: []VERPKey{}, ExpiryDays: verp.DefaultExpiryDays,
			Guard: GuardConfig{MaxBad: 5, Window: Duration(10 * time.Minute), Ban: Duration(time.Hour)},
		},
		HTTP: HTTPConfig{Listen: "127.0.0.1:8025", Tokens: []string{}},
		Store: StoreConfig{Path: "bouncer.db", LockTimeout: Duration(5 * time.Second), CommitInterval: Duration(bolt.DefaultCommitInterval),
			DedupeWindow: Duration(store.DefaultDedupeWindow), PruneInterval: Duration(time.Hour)},
		Log:    LogConfig{Level: "info"},
		Policy: PolicyConfig{Rules: policy.DefaultRules()},
		Push:   defaultPush(),
		MX: MXConfig{Port: 25, Timeout: Duration(10 * time.Second), MaxMX: 10, MaxAddrs: 16, IPv6: true,
			Recheck: "auto", RecheckInterval: Duration(24 * time.Hour), RecheckConcurrency: 4},
		Storm: StormConfig{Threshold: 20, Window: Duration(time.Hour)},
	}
}

// loadConfig reads path over the defaults. An empty path gives the
// defaults. Unknown keys are an error, so a typo cannot silently fall back
// to a default. Relative paths in the file are resolved against its folder.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, cfg.validate()
	}
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
	for _, p := range []*string{&cfg.Store.Path, &cfg.SMTP.TLSCertFile, &cfg.SMTP.TLSKeyFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	return cfg, cfg.validate()
}

func (c *Config) validate() error {
	if c.SMTP.Listen == "" {
		return errors.New("config: smtp.listen is empty")
	}
	if c.Store.Path == "" {
		return errors.New("config: store.path is empty")
	}
	for _, n := range []struct {
		name string
		v    float64
	}{
		{"smtp.max_message_bytes", float64(c.SMTP.MaxMessageBytes)},
		{"smtp.max_data_memory", float64(c.SMTP.MaxDataMemory)},
		{"smtp.max_recipients", float64(c.SMTP.MaxRecipients)},
		{"smtp.max_line_length", float64(c.SMTP.MaxLineLength)},
		{"smtp.min_data_rate", float64(c.SMTP.MinDataRate)},
		{"smtp.max_conns", float64(c.SMTP.MaxConns)},
		{"smtp.max_conns_per_ip", float64(c.SMTP.MaxConnsPerIP)},
		{"smtp.connect_rate", c.SMTP.ConnectRate},
		{"smtp.connect_burst", float64(c.SMTP.ConnectBurst)},
		{"smtp.max_bad_commands", float64(c.SMTP.MaxBadCommands)},
		{"mx.port", float64(c.MX.Port)},
		{"mx.max_mx", float64(c.MX.MaxMX)},
		{"mx.max_addrs", float64(c.MX.MaxAddrs)},
		{"mx.recheck_concurrency", float64(c.MX.RecheckConcurrency)},
	} {
		if n.v <= 0 {
			return fmt.Errorf("config: %s must be positive (there is no way to switch a limit off)", n.name)
		}
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{
		{"smtp.read_timeout", c.SMTP.ReadTimeout},
		{"smtp.write_timeout", c.SMTP.WriteTimeout},
		{"smtp.session_timeout", c.SMTP.SessionTimeout},
		{"smtp.shutdown_timeout", c.SMTP.ShutdownTimeout},
		{"smtp.save_timeout", c.SMTP.SaveTimeout},
		{"smtp.data_rate_grace", c.SMTP.DataRateGrace},
		{"store.lock_timeout", c.Store.LockTimeout},
		{"mx.timeout", c.MX.Timeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("config: %s must be positive", d.name)
		}
	}
	if c.Store.CommitInterval < 0 || c.Store.CommitInterval > Duration(10*time.Second) {
		return errors.New("config: store.commit_interval must be between 0s (no log) and 10s")
	}
	if c.Store.RawRetention < 0 || c.Store.PruneInterval < 0 {
		return errors.New("config: store.raw_retention and store.prune_interval must not be negative (0 switches them off)")
	}
	if c.Store.DedupeWindow <= 0 {
		return errors.New("config: store.dedupe_window must be positive")
	}
	if c.MX.Recheck != "auto" && c.MX.Recheck != "on" && c.MX.Recheck != "off" {
		return fmt.Errorf("config: mx.recheck %q: want auto, on or off", c.MX.Recheck)
	}
	if c.MX.RecheckInterval < 0 {
		return errors.New("config: mx.recheck_interval must not be negative (0 switches it off)")
	}
	if c.Storm.Threshold < 0 || c.Storm.Threshold > store.MaxStormThreshold {
		return fmt.Errorf("config: storm.threshold must be between 0 (off) and %d", store.MaxStormThreshold)
	}
	if c.Storm.Window <= 0 {
		return errors.New("config: storm.window must be positive")
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
	if err := c.verpOptions().Validate(); err != nil {
		return fmt.Errorf("config: verp: %w", err)
	}
	if _, err := policy.Compile(c.Policy.Rules); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.VERP.SignKey != "" && !c.hasKey(c.VERP.SignKey) {
		return fmt.Errorf("config: verp.sign_key %q is not one of verp.keys", c.VERP.SignKey)
	}
	if c.VERP.Required && len(c.VERP.Keys) == 0 {
		return errors.New("config: verp.required needs verp.keys")
	}
	if c.VERP.Guard.MaxBad <= 0 || c.VERP.Guard.Window <= 0 || c.VERP.Guard.Ban <= 0 {
		return errors.New("config: verp.guard.max_bad, window and ban must be positive")
	}
	if len(c.SMTP.Domains) == 0 && !isLoopback(c.SMTP.Listen) {
		return fmt.Errorf("config: smtp.domains is empty, which accepts mail for any domain; "+
			"that is only allowed on a loopback address, not %q", c.SMTP.Listen)
	}
	if c.HTTP.Listen != "" && len(c.HTTP.Tokens) == 0 && !isLoopback(c.HTTP.Listen) {
		return fmt.Errorf("config: http.listen %q is not a loopback address: set http.tokens", c.HTTP.Listen)
	}
	return nil
}

// verpOptions turns the config into the decoder's options.
func (c *Config) verpOptions() verp.Options {
	o := verp.Options{
		Delimiter:  c.VERP.Delimiter,
		Equals:     c.VERP.Equals,
		Prefix:     c.VERP.Prefix,
		ExpiryDays: c.VERP.ExpiryDays,
		Required:   c.VERP.Required,
	}
	for _, k := range c.VERP.Keys {
		o.Keys = append(o.Keys, verp.Key{ID: k.ID, Secret: k.Secret})
	}
	return o
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
