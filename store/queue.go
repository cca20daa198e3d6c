package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// Queue hands deliveries from the callers of an engine's Save to its one
// writer goroutine. A caller may give up (its context ends) only while
// its delivery still waits in the queue; once the writer has taken it,
// the caller waits for the outcome, so that it never reports a failure
// for a delivery that was in fact stored. Both engines use it.
type Queue[T Queued] struct {
	mu     sync.RWMutex // guards closed and sending on ch
	closed bool
	ch     chan T
}

// Queued is a queue element: a pointer to a struct that embeds Ticket.
type Queued interface{ ticket() *Ticket }

// Ticket is the state of one queued delivery, embedded in an engine's
// request.
type Ticket struct {
	state atomic.Int32
	done  chan struct{}
}

// Ticket states.
const (
	ticketQueued    int32 = iota
	ticketTaken           // the writer has it; the caller waits for Done
	ticketCancelled       // the caller gave up while it was queued
)

func (t *Ticket) ticket() *Ticket { return t }

// Take is called by the writer for each element it receives: false means
// the caller gave up and the element must be skipped.
func (t *Ticket) Take() bool { return t.state.CompareAndSwap(ticketQueued, ticketTaken) }

// Done wakes the caller of a taken element; its outcome must be set
// before.
func (t *Ticket) Done() { close(t.done) }

// NewQueue makes a queue of n elements.
func NewQueue[T Queued](n int) *Queue[T] { return &Queue[T]{ch: make(chan T, n)} }

// C is what the writer receives from; it is closed by Close.
func (q *Queue[T]) C() <-chan T { return q.ch }

// Submit queues v and waits until the writer has called Done on it. It
// fails with ErrClosed after Close, and with ctx's error when ctx ends
// while v is still queued (then the writer skips it).
func (q *Queue[T]) Submit(ctx context.Context, v T) error {
	t := v.ticket()
	t.done = make(chan struct{})
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		return ErrClosed
	}
	select {
	case q.ch <- v:
		q.mu.RUnlock()
	case <-ctx.Done():
		q.mu.RUnlock()
		return fmt.Errorf("saving delivery: %w", ctx.Err())
	}
	select {
	case <-t.done:
	case <-ctx.Done():
		if t.state.CompareAndSwap(ticketQueued, ticketCancelled) {
			return fmt.Errorf("saving delivery: %w", ctx.Err())
		}
		<-t.done
	}
	return nil
}

// Close refuses further Submits and closes C; the writer drains what is
// queued. It reports whether this call closed the queue.
func (q *Queue[T]) Close() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.closed = true
	close(q.ch)
	return true
}
