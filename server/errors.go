package server

import (
	"context"
	"errors"
	"net"
	"os"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/verp"
)

// Errors a session returns before they are turned into SMTP replies by
// toSMTP. They never reach the client as text.
var (
	errForeignDomain = errors.New("recipient domain is not a bounce domain")
	errBadRecipient  = errors.New("malformed recipient address")
	errBadSender     = errors.New("malformed sender address")
	errTooManyBad    = errors.New("too many rejected commands")
	errShuttingDown  = errors.New("server shutting down")
	errTooManyConns  = errors.New("too many connections")
	errConnectRate   = errors.New("connecting too often")
	errBanned        = errors.New("client banned for bad return path tokens")
	errEvicted       = errors.New("evicted to make room: no command accepted yet")
	errMessageRate   = errors.New("client network over its message rate")
	errByteRate      = errors.New("client network over its byte rate")
	errLowDisk       = errors.New("free disk space below the floor")
)

// Reasons a command is refused, as counted in Stats.RejectedBy.
const (
	ReasonForeignDomain = "not_bounce_domain" // RCPT domain is not a bounce domain
	ReasonBadAddress    = "bad_address"       // malformed sender or recipient
	ReasonBadToken      = "bad_token"         // signed return path: bad MAC, unknown key, expired
	ReasonUnsigned      = "unsigned"          // plain VERP while signed tokens are required
	ReasonBanned        = "banned"            // too many bad tokens from this client
	ReasonRate          = "rate"              // the client's network is over its message or byte rate
	ReasonDisk          = "disk"              // free disk space below the floor
	ReasonOther         = "other"
)

// rejectReasons lists the reasons in the order of counters.rejectedBy.
var rejectReasons = [...]string{ReasonForeignDomain, ReasonBadAddress, ReasonBadToken, ReasonUnsigned, ReasonBanned, ReasonRate, ReasonDisk, ReasonOther}

// rejectReason names why err refused a command, an index into
// rejectReasons.
func rejectReason(err error) int {
	switch {
	case errors.Is(err, errForeignDomain):
		return 0
	case errors.Is(err, errBadRecipient), errors.Is(err, errBadSender):
		return 1
	case errors.Is(err, verp.ErrBadMAC), errors.Is(err, verp.ErrUnknownKey), errors.Is(err, verp.ErrExpired):
		return 2
	case errors.Is(err, verp.ErrUnsigned):
		return 3
	case errors.Is(err, errBanned):
		return 4
	case errors.Is(err, errMessageRate), errors.Is(err, errByteRate):
		return 5
	case errors.Is(err, errLowDisk):
		return 6
	}
	return 7
}

// readError wraps an error that happened while reading the message body
// from the client, so toSMTP can tell it from a storage failure.
type readError struct{ err error }

func (e *readError) Error() string { return "reading message: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// saveError wraps an error returned by the Saver.
type saveError struct{ err error }

func (e *saveError) Error() string { return "saving message: " + e.err.Error() }
func (e *saveError) Unwrap() error { return e.err }

// panicError is what a session method returns after recovering a panic.
type panicError struct{ v any }

func (e *panicError) Error() string { return "panic in session" }

// toSMTP turns an error from a session step into the reply the client gets.
// It is the only place where Go errors become SMTP replies. The reply text is
// always one of the fixed strings below and never err.Error(): go-smtp would
// show a plain error's text to the client, and from Data as a permanent 554,
// which would make a full disk lose bounces.
func toSMTP(err error) *smtp.SMTPError {
	if err == nil {
		return nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		// go-smtp's own replies, such as ErrDataTooLarge (552 5.3.4), pass
		// through unchanged.
		return se
	}
	var pe *panicError
	if errors.As(err, &pe) {
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Internal server error, closing connection"}
	}
	switch {
	case errors.Is(err, errForeignDomain):
		// RFC 3463 X.7.1: delivery not authorized, message refused.
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relaying denied: not a bounce domain of this server"}
	case errors.Is(err, verp.ErrBadMAC), errors.Is(err, verp.ErrUnknownKey),
		errors.Is(err, verp.ErrExpired), errors.Is(err, verp.ErrUnsigned):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Return path token not valid"}
	case errors.Is(err, errBadRecipient):
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Malformed recipient address"}
	case errors.Is(err, errBadSender):
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "Malformed sender address"}
	case errors.Is(err, errTooManyBad):
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many errors, closing connection"}
	case errors.Is(err, errTooManyConns):
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many connections, try again later"}
	case errors.Is(err, errConnectRate):
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Connecting too often, try again later"}
	case errors.Is(err, errBanned):
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many invalid return path tokens, try again later"}
	case errors.Is(err, errEvicted):
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too busy and no command yet, closing connection"}
	case errors.Is(err, errMessageRate), errors.Is(err, errByteRate):
		// RFC 3463 X.7.1 with a 4xx code: refused for now; an honest
		// MTA keeps the bounce and retries.
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Too much mail from your network, try again later"}
	case errors.Is(err, errLowDisk):
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage, try again later"}
	case errors.Is(err, errShuttingDown):
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}
	case errors.Is(err, errNoMemory):
		// RFC 5321 §4.2.3 and RFC 3463 X.3.1: a temporary shortage; the
		// sender keeps the message and retries.
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage, try again later"}
	case errors.Is(err, smtp.ErrTooLongLine):
		// RFC 5321 §4.5.3.1.6 limits a text line; go-smtp closes the
		// connection after this.
		return &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Line too long"}
	}
	var re *readError
	if errors.As(err, &re) {
		if isTimeout(err) {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Timeout reading message, closing connection"}
		}
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 0}, Message: "Error reading message, closing connection"}
	}
	// Storage failures, storage timeouts and anything unexpected: a
	// temporary failure, so the sender keeps the bounce and retries.
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary local problem, try again later"}
}

// isTimeout reports whether err is a network or context timeout.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// withID returns a copy of e with the reply id appended to its text, so a
// client's report can be matched to our log line.
func withID(e *smtp.SMTPError, id string) *smtp.SMTPError {
	c := *e
	c.Message += " (id " + id + ")"
	return &c
}
