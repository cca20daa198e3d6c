// Package pgtest runs a private PostgreSQL server for tests: initdb into
// a temporary directory and postgres on 127.0.0.1 with a free port, as
// the postgres user when the tests run as root. One cluster serves a
// whole test binary (initdb takes seconds); each test gets a database of
// its own from Cluster.Database.
//
// A test package uses it from TestMain:
//
//	var cluster *pgtest.Cluster
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &cluster)) }
//
// The server runs with fsync=off unless PGTEST_FSYNC=on (for benchmarks
// of COMMIT). Without PostgreSQL binaries Main prints one line saying how to get them
// and the tests skip; with CI=true in the environment it fails instead.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// SkipMessage is what Main prints and tests skip with when no PostgreSQL
// binaries are found.
const SkipMessage = "postgres tests skipped: no initdb found in /usr/lib/postgresql/*/bin or PATH; apt-get install postgresql (CI=true makes this a failure)"

// ErrNoBinaries is returned by StartCluster when initdb is not found.
var ErrNoBinaries = errors.New("no PostgreSQL binaries found")

// Cluster is a running private PostgreSQL server.
type Cluster struct {
	bin  string // directory of initdb, postgres, pg_ctl
	dir  string // temporary directory: data in dir/data
	port int
	cred *syscall.Credential // the postgres user's, when we are root
	cmd  *exec.Cmd
	exit chan error
	n    atomic.Int64 // databases created

	fsync    string   // "on" or "off"
	keep     bool     // the directory was given: Close leaves it
	settings []string // Options.Settings
}

// Options are for StartClusterWith.
type Options struct {
	// Dir holds the data directory (Dir/data) and the server's log
	// (Dir/postgres.log). It is created if missing, and a data directory
	// already in it is reused, so a filled database survives a restart.
	// Empty: a new temporary directory, removed by Close.
	Dir string
	// Fsync sets fsync and full_page_writes, as on a production server.
	Fsync bool
	// Settings are more server settings, "name=value" each (postgres -c),
	// after the defaults (shared_buffers=64MB, max_connections=200).
	Settings []string
}

// Main starts a cluster into *c, runs the tests and stops the cluster. It
// returns the exit code for os.Exit. Without binaries it prints
// SkipMessage and runs the tests with *c nil (Database skips them), or
// fails when the environment has CI=true.
func Main(m *testing.M, c **Cluster) int {
	cl, err := StartCluster()
	if errors.Is(err, ErrNoBinaries) {
		fmt.Fprintln(os.Stderr, SkipMessage)
		if os.Getenv("CI") == "true" {
			return 1
		}
		return m.Run()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting postgres: %v\n", err)
		return 1
	}
	*c = cl
	code := m.Run()
	if err := cl.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping postgres: %v\n", err)
	}
	return code
}

// findBin returns the directory of the newest initdb.
func findBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		return filepath.Dir(p), nil
	}
	return "", ErrNoBinaries
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// StartCluster runs initdb into a new temporary directory and starts the
// server; ErrNoBinaries if there is no initdb.
// The server runs with fsync off unless PGTEST_FSYNC=on.
func StartCluster() (*Cluster, error) {
	return StartClusterWith(Options{Fsync: os.Getenv("PGTEST_FSYNC") == "on"})
}

// StartClusterWith is StartCluster with the directory and fsync chosen
// by the caller (bench/pgserver).
func StartClusterWith(o Options) (*Cluster, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, dir: o.Dir, keep: o.Dir != "", fsync: "off", settings: o.Settings}
	if o.Fsync {
		c.fsync = "on"
	}
	if c.keep {
		if c.dir, err = filepath.Abs(c.dir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			return nil, err
		}
	} else if c.dir, err = os.MkdirTemp("", "pgtest-"); err != nil {
		return nil, err
	}
	fail := func(err error) (*Cluster, error) {
		if !c.keep {
			os.RemoveAll(c.dir)
		}
		return nil, err
	}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		if c.cred, err = chownPG(c.dir); err != nil {
			return fail(err)
		}
	}
	if _, err := os.Stat(filepath.Join(c.data(), "PG_VERSION")); err != nil {
		out, err := c.command("initdb", "-D", c.data(), "-A", "trust", "-U", "postgres", "-E", "UTF8",
			"--locale=C", "--no-sync").CombinedOutput()
		if err != nil {
			return fail(fmt.Errorf("initdb: %w: %s", err, out))
		}
	}
	if err := c.Start(); err != nil {
		return fail(err)
	}
	return c, nil
}

// chownPG gives dir to the postgres user and returns its credential.
func chownPG(dir string) (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// command runs a PostgreSQL binary, as the postgres user if we are root
// (set directly, not through runuser, so that signals reach postgres).
func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		cmd.Dir = c.dir
	}
	return cmd
}

// freePort returns a port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts the server: on a free port the first time, on the same
// port again after Stop, so that connection strings stay valid. It
// returns once the server accepts connections.
func (c *Cluster) Start() error {
	if c.cmd != nil {
		return errors.New("postgres is running")
	}
	if c.port != 0 {
		return c.start()
	}
	var err error
	for range 3 { // another process may take the free port first
		if c.port, err = freePort(); err != nil {
			return err
		}
		if err = c.start(); err == nil {
			return nil
		}
	}
	c.port = 0
	return err
}

func (c *Cluster) start() error {
	// Tests need no durability across a crash of the machine; benchmarks
	// of COMMIT set PGTEST_FSYNC=on.
	fsync := c.fsync
	args := []string{"-D", c.data(), "-h", "127.0.0.1", "-p", strconv.Itoa(c.port),
		"-k", "", "-c", "fsync=" + fsync, "-c", "full_page_writes=" + fsync, "-c", "max_connections=200",
		"-c", "shared_buffers=64MB"}
	for _, s := range c.settings {
		args = append(args, "-c", s)
	}
	cmd := c.command("postgres", args...)
	// A process group of its own, which Kill ends as a whole: the
	// postmaster and every backend.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	logf, err := os.Create(filepath.Join(c.dir, "postgres.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting postgres: %w", err)
	}
	c.cmd, c.exit = cmd, make(chan error, 1)
	go func() { c.exit <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-c.exit:
			c.cmd = nil
			log, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
			return fmt.Errorf("postgres exited: %v: %s", err, tail(log))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, c.url("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Stop()
	return errors.New("postgres did not accept connections within 30s")
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

// Stop stops the server (fast shutdown: sessions are ended at once).
func (c *Cluster) Stop() error {
	if c.cmd == nil {
		return nil
	}
	// SIGINT is PostgreSQL's fast shutdown.
	c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.exit:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.exit
	}
	c.cmd = nil
	return nil
}

// Kill ends the server as a crash would: SIGKILL to the postmaster and
// every backend at once, mid-transaction or mid-commit. It returns once
// they are all gone; Start then runs crash recovery from the WAL.
func (c *Cluster) Kill() error {
	if c.cmd == nil {
		return nil
	}
	pgid := c.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing postgres: %w", err)
	}
	<-c.exit
	c.cmd = nil
	// Backends end a moment after the postmaster; a new postmaster
	// refuses to start while they hold the shared memory.
	for deadline := time.Now().Add(30 * time.Second); syscall.Kill(-pgid, 0) == nil; {
		if time.Now().After(deadline) {
			return errors.New("postgres backends still running 30s after SIGKILL")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Restart stops the server (fast shutdown) and starts it again on the
// same port.
func (c *Cluster) Restart() error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.Start()
}

// Running reports whether the server was started and not stopped or
// killed since.
func (c *Cluster) Running() bool { return c.cmd != nil }

// Terminate ends the sessions on the database of url with
// pg_terminate_backend, as a cut connection or an administrator would,
// and returns how many it ended.
func (c *Cluster) Terminate(ctx context.Context, url string) (int, error) {
	return c.onBackends(ctx, url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", nil)
}

// KillBackends sends SIGKILL to the server processes of the sessions on
// the database of url, and returns how many. The postmaster then ends
// every other session and runs crash recovery before it accepts again
// (PostgreSQL's restart_after_crash). It returns once the server accepts
// connections again, so that what runs next (other tests, a store being
// opened) does not meet a server in recovery.
func (c *Cluster) KillBackends(ctx context.Context, url string) (int, error) {
	n, err := c.onBackends(ctx, url, "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", func(pid int) error {
		return syscall.Kill(pid, syscall.SIGKILL)
	})
	if err != nil || n == 0 {
		return n, err
	}
	// The postmaster may not have noticed the crash yet: a connection
	// can still succeed before recovery starts. Wait a moment for it to
	// begin (a refused connection), then for its end.
	ready, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c.connect(ready) != nil {
			break
		}
	}
	return n, c.WaitReady(ready)
}

// WaitReady waits until the server accepts connections (after a start, a
// crash or recovery), or ctx ends.
func (c *Cluster) WaitReady(ctx context.Context) error {
	for {
		err := c.connect(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres not accepting connections: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// connect opens and closes one connection to the postgres database.
func (c *Cluster) connect(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.url("postgres"))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// onBackends runs query (over the sessions of url's database) from the
// postgres database: with each, the pids it returns to fn; without, the
// count it returns.
func (c *Cluster) onBackends(ctx context.Context, url, query string, fn func(pid int) error) (int, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return 0, err
	}
	conn, err := pgx.Connect(ctx, c.url("postgres"))
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	if fn == nil {
		var n int
		err := conn.QueryRow(ctx, query, cfg.Database).Scan(&n)
		return n, err
	}
	rows, err := conn.Query(ctx, query, cfg.Database)
	if err != nil {
		return 0, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		if err := fn(pid); err != nil && !errors.Is(err, syscall.ESRCH) {
			return 0, err
		}
	}
	return len(pids), nil
}

// Close stops the server and removes its directory, unless the
// directory was given in Options.
func (c *Cluster) Close() error {
	c.Stop()
	if c.keep {
		return nil
	}
	return os.RemoveAll(c.dir)
}

// Port is the server's TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// URL is the connection string of database db on the server.
func (c *Cluster) URL(db string) string { return c.url(db) }

// CreateDatabase creates database name unless it exists.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.url("postgres"))
	if err != nil {
		return fmt.Errorf("connecting to postgres: %w", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		return fmt.Errorf("looking up database %s: %w", name, err)
	}
	if n > 0 {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	return nil
}

func (c *Cluster) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// Database creates a new empty database and returns its connection
// string. It skips t when c is nil (no binaries).
func (c *Cluster) Database(t testing.TB) string {
	t.Helper()
	if c == nil {
		t.Skip(SkipMessage)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), c.n.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A test before may have left the server in crash recovery.
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("connecting to postgres: %v", err)
	}
	conn, err := pgx.Connect(ctx, c.url("postgres"))
	if err != nil {
		t.Fatalf("connecting to postgres: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database: %v", err)
	}
	return c.url(name)
}
