package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// Backuper writes a consistent copy of the database (bolt.DB.Backup).
type Backuper interface {
	Backup(w io.Writer) (int64, error)
}

// Trailers of GET /v1/backup: the bytes the server wrote, and why it
// broke off, if it did.
const (
	BackupBytesTrailer = "X-Bouncer-Backup-Bytes"
	BackupErrorTrailer = "X-Bouncer-Backup-Error"
)

// WithBackup serves GET /v1/backup from b: the database file, streamed
// while the server runs (application/octet-stream).
func (h *Handler) WithBackup(b Backuper) *Handler {
	h.mux.HandleFunc("GET /v1/backup", h.auth(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", BackupBytesTrailer+", "+BackupErrorTrailer)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="bouncer.db"`)
		dw := &deadlineWriter{w: w, rc: http.NewResponseController(w)}
		n, err := b.Backup(dw)
		if err != nil && !dw.wrote {
			h.fail(w, "backing up", err)
			return
		}
		w.Header().Set(BackupBytesTrailer, strconv.FormatInt(n, 10))
		if err != nil {
			h.log.Error("backing up", "err", err)
			w.Header().Set(BackupErrorTrailer, "backup failed; see the server log")
		}
	}))
	return h
}

// Backup streams GET /v1/backup to w and returns the bytes copied. A
// copy the server broke off, or shorter than it wrote, is an error.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	resp, err := c.get(ctx, "/v1/backup", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("reading backup: %w", err)
	}
	if msg := resp.Trailer.Get(BackupErrorTrailer); msg != "" {
		return n, fmt.Errorf("backup broke off: %s", msg)
	}
	if want, err := strconv.ParseInt(resp.Trailer.Get(BackupBytesTrailer), 10, 64); err != nil || want != n {
		return n, fmt.Errorf("backup incomplete: got %d bytes, the server wrote %q", n, resp.Trailer.Get(BackupBytesTrailer))
	}
	return n, nil
}
