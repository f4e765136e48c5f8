package raftstore

import (
	"context"
	"sync"
	"time"
)

// Read leases: linearizable reads served from local state on every node,
// leader and followers alike, without a round trip per read. The reasoning
// is in DESIGN.md ("Read leases"); in short:
//
//   - The stable index is the highest index that the leader and every
//     follower holding a lease have applied. A write is acknowledged only
//     once the stable index reaches it, so a lease holder has applied every
//     acknowledged write.
//   - A read answers only once the stable index covers the state it read
//     (see Store.VisibleIndex), so no node shows an entry that a lease
//     holder could still miss.
//   - The leader holds a lease of its own from each successful
//     VerifyLeader (no other leader can be elected within a heartbeat
//     timeout of a quorum's last contact) and grants follower leases only
//     while it holds its own. A new leader publishes no stable index and
//     acknowledges nothing until every lease its predecessor could have
//     granted has run out.

type holderState int

const (
	// holderPending: not counted in the stable index, serves no lease reads.
	holderPending holderState = iota
	// holderActive: counted; renewed by each of its messages.
	holderActive
	// holderRevoking: still counted until it expires, no longer renewed
	// (it stopped applying).
	holderRevoking
)

// holder is the leader's record of one follower's lease.
type holder struct {
	state   holderState
	applied uint64
	// behindSince: since when it has been behind the leader's applied
	// index without applying anything; zero when caught up.
	behindSince time.Time
	expires     time.Time // leader clock; counts while active or revoking
	epoch       uint64
	grantSeq    uint64 // the follower message whose send time starts its lease
	stream      uint64 // the stream attached last; messages of others are ignored
	notify      []chan struct{}
}

// LeaseGrant is the leader's answer on a follower's lease stream.
type LeaseGrant struct {
	// Seq is the follower message the lease runs from: the follower counts
	// the lease from when it sent that message.
	Seq    uint64 `json:"seq"`
	Active bool   `json:"active"`
	Epoch  uint64 `json:"epoch"`
	// Stable is the leader's stable index.
	Stable uint64 `json:"stable"`
}

// leaseTable is the leader's side: its own lease and the followers'.
type leaseTable struct {
	dur      time.Duration // follower lease
	margin   time.Duration // leader-side slack on a follower lease
	self     time.Duration // leader lease from the start of a VerifyLeader
	lagLimit time.Duration // a holder that applies nothing for this long, while behind, loses its lease
	applied  func() uint64 // the leader's applied index
	stable   *indexWaiter

	// guard: after a leadership transfer ends, however it ended, no lease
	// for this long (a TimeoutNow may still be on its way).
	guard time.Duration

	mu        sync.Mutex
	term      uint64 // ready leader's term; 0 when not leading
	notBefore time.Time
	selfUntil time.Time
	transfers int       // leadership transfers under way
	noLease   time.Time // no lease before this (the last transfer's guard)
	epochs    uint64
	streams   uint64
	holders   map[string]*holder
}

func newLeaseTable(dur, self, guard time.Duration, applied func() uint64, stable *indexWaiter) *leaseTable {
	return &leaseTable{dur: dur, margin: dur/10 + 10*time.Millisecond, self: self, lagLimit: dur / 2,
		guard: guard, applied: applied, stable: stable, holders: map[string]*holder{}}
}

// start makes the table serve a new term. Nothing is published or granted
// before notBefore: a follower lease granted by the previous leader lasts
// at most dur from its grant.
func (t *leaseTable) start(term uint64, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.wakeAllLocked()
	t.term = term
	t.notBefore = now.Add(t.dur + t.margin)
	t.selfUntil = time.Time{}
	t.holders = map[string]*holder{}
}

// stop ends leadership: every stream attached is woken to notice.
func (t *leaseTable) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.term = 0
	t.wakeAllLocked()
	t.holders = map[string]*holder{}
}

func (t *leaseTable) wakeAllLocked() {
	for _, h := range t.holders {
		for _, ch := range h.notify {
			close(ch)
		}
		h.notify = nil
	}
}

// setTransferring stops the leader's own lease and its grants around a
// leadership transfer (the target is elected at once, without waiting for
// a heartbeat timeout) and, when the transfer ends, for the guard after it.
// Transfers may overlap: each start is matched by one end.
func (t *leaseTable) setTransferring(on bool, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if on {
		t.transfers++
		t.selfUntil = time.Time{}
		return
	}
	t.transfers = max(t.transfers-1, 0)
	t.noLease = now.Add(t.guard)
}

// extendSelf records a quorum's confirmation of a VerifyLeader started at
// began, in term.
func (t *leaseTable) extendSelf(term uint64, began time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.term != term || t.transfers > 0 || began.Before(t.noLease) {
		return
	}
	if until := began.Add(t.self); until.After(t.selfUntil) {
		t.selfUntil = until
	}
}

func (t *leaseTable) selfValidLocked(now time.Time) bool {
	return t.term != 0 && t.transfers == 0 && !now.Before(t.notBefore) && !now.Before(t.noLease) && now.Before(t.selfUntil)
}

// selfFresh reports whether more than half of the leader's own lease is
// left.
func (t *leaseTable) selfFresh(term uint64, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.term == term && t.selfUntil.Sub(now) > t.self/2
}

// selfValid reports whether the leader may serve reads from its own state
// in term.
func (t *leaseTable) selfValid(term uint64, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.term == term && t.selfValidLocked(now)
}

// waitNotBefore blocks until the term may publish (see start).
func (t *leaseTable) waitNotBefore(ctx context.Context, term uint64) error {
	t.mu.Lock()
	nb, cur := t.notBefore, t.term
	t.mu.Unlock()
	if cur != term {
		return ErrNotLeader
	}
	d := time.Until(nb)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recompute publishes the stable index: the minimum applied index of the
// leader and every counted holder. It also drops expired leases.
func (t *leaseTable) recompute(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recomputeLocked(now)
}

func (t *leaseTable) recomputeLocked(now time.Time) {
	if t.term == 0 || now.Before(t.notBefore) {
		return
	}
	leader := t.applied()
	st := leader
	for _, h := range t.holders {
		if h.applied < leader && h.behindSince.IsZero() {
			h.behindSince = now
		}
		if h.state == holderPending {
			continue
		}
		if now.After(h.expires) {
			h.state = holderPending
			continue
		}
		st = min(st, h.applied)
	}
	if st > t.stable.get() {
		t.stable.set(st)
		for _, h := range t.holders {
			signal(h.notify)
		}
	}
}

func signal(chs []chan struct{}) {
	for _, ch := range chs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// message handles one message of follower id: seq numbers its messages,
// applied is its applied index. Each message from an active holder renews
// its lease; a pending one becomes active once it has applied the stable
// index (so it holds every acknowledged write).
func (t *leaseTable) message(id string, stream, seq, applied uint64, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.term == 0 {
		return ErrNotLeader
	}
	h := t.holders[id]
	if h == nil || h.stream != stream {
		return nil // a stream that another one replaced
	}
	if applied > h.applied {
		h.behindSince = time.Time{} // it applies: not stuck
	}
	// As reported, even if lower than before: a follower restarted on an
	// older state must not be taken for one that holds every write.
	h.applied = applied
	// Activation compares with this term's stable index, which must be
	// computed first (the waiter may still hold an older term's).
	t.recomputeLocked(now)
	switch h.state {
	case holderPending:
		if t.selfValidLocked(now) && h.applied >= t.stable.get() {
			// The term keeps epochs unique across restarts of the leader.
			t.epochs++
			h.state, h.epoch, h.grantSeq = holderActive, t.term<<32|t.epochs&(1<<32-1), seq
			h.expires = now.Add(t.dur + t.margin)
		}
	case holderActive:
		if h.applied < t.applied() && !h.behindSince.IsZero() && now.Sub(h.behindSince) > t.lagLimit {
			// It stopped applying (full disk, stuck): stop renewing, so
			// that writes wait for it at most until it expires.
			h.state = holderRevoking
		} else if t.selfValidLocked(now) {
			h.grantSeq = seq
			h.expires = now.Add(t.dur + t.margin)
		}
	}
	t.recomputeLocked(now)
	signal(h.notify)
	return nil
}

// grant is what the leader currently tells follower id.
func (t *leaseTable) grant(id string) (LeaseGrant, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.term == 0 {
		return LeaseGrant{}, ErrNotLeader
	}
	g := LeaseGrant{Stable: t.stable.get()}
	if h := t.holders[id]; h != nil && h.state == holderActive {
		g.Seq, g.Active, g.Epoch = h.grantSeq, true, h.epoch
	}
	return g, nil
}

// attach registers a stream of follower id, replacing any earlier one: the
// returned token goes with its messages, and the channel receives a signal
// when there is news for it and is closed when leadership ends. What the
// follower reported on earlier streams no longer counts (it may have
// restarted on other state), but a lease in force stays counted until it
// runs out.
func (t *leaseTable) attach(id string) (uint64, <-chan struct{}, func(), error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.term == 0 {
		return 0, nil, nil, ErrNotLeader
	}
	h := t.holders[id]
	if h == nil {
		h = &holder{}
		t.holders[id] = h
	}
	t.streams++
	h.stream, h.applied, h.grantSeq, h.behindSince = t.streams, 0, 0, time.Time{}
	if h.state == holderActive {
		h.state = holderRevoking // renewed only by a new activation
	}
	token := h.stream
	ch := make(chan struct{}, 1)
	h.notify = append(h.notify, ch)
	term := t.term
	detach := func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.term != term {
			return
		}
		if h := t.holders[id]; h != nil {
			for i, c := range h.notify {
				if c == ch {
					h.notify = append(h.notify[:i], h.notify[i+1:]...)
					break
				}
			}
		}
	}
	return token, ch, detach, nil
}

// followerLease is a follower's side: the lease it holds from the leader.
type followerLease struct {
	dur time.Duration

	mu      sync.Mutex
	leader  string // leader id the lease and sequence numbers are for
	active  bool
	epoch   uint64
	expires time.Time // this node's clock: send time of the granting message + dur
	seq     uint64
	sent    map[uint64]time.Time
}

// next numbers a message about to be sent to leader and notes when.
func (f *followerLease) next(leader string, now time.Time) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if leader != f.leader {
		f.leader, f.active, f.sent = leader, false, map[uint64]time.Time{}
	}
	f.seq++
	f.sent[f.seq] = now
	delete(f.sent, f.seq-64)
	return f.seq
}

// update applies a grant from leader.
func (f *followerLease) update(leader string, g LeaseGrant) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if leader != f.leader {
		return
	}
	if !g.Active {
		f.active = false
		return
	}
	sent, ok := f.sent[g.Seq]
	if !ok {
		return
	}
	exp := sent.Add(f.dur)
	if !f.active || f.epoch != g.Epoch {
		f.active, f.epoch, f.expires = true, g.Epoch, exp
	} else if exp.After(f.expires) {
		f.expires = exp
	}
}

func (f *followerLease) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active = false
}

// valid reports the epoch of a lease from leader in force at now.
func (f *followerLease) valid(leader string, now time.Time) (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.active || leader == "" || leader != f.leader || !now.Before(f.expires) {
		return 0, false
	}
	return f.epoch, true
}

// every runs fn every period until the store closes.
func (s *Store) every(period time.Duration, fn func()) {
	defer s.wg.Done()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			fn()
		}
	}
}

// renewSelfLease renews the leader's own lease, when less than half of it
// is left, with a committed no-op (run every eighth of a heartbeat timeout;
// writes renew it too, see Apply). A committed entry was received by a
// quorum after it was proposed; VerifyLeader would not do: it also counts
// answers to heartbeats sent before it was called.
func (s *Store) renewSelfLease() {
	term := s.readyTerm.Load()
	if term == 0 || !s.leaderReady() || s.leases.selfFresh(term, time.Now()) {
		return
	}
	began := time.Now()
	if err := s.applyNoop(); err == nil && s.readyTerm.Load() == term {
		s.leases.extendSelf(term, began)
	}
}

// waitStable blocks until the stable index reaches idx, a committed
// entry of this leader's term. Should leadership move meanwhile, the entry
// is still committed: a stable index from the next leader (which reaches
// this node on its lease stream) confirms it just as well, so it waits for
// that, two heartbeat timeouts at most.
func (s *Store) waitStable(ctx context.Context, term, idx uint64) error {
	var lost time.Time
	for s.stable.get() < idx {
		if lost.IsZero() {
			// Followers learn the commit index from the next message: send one.
			s.Nudge()
		}
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := s.stable.wait(wctx, idx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if lost.IsZero() && (!s.leaderReady() || s.readyTerm.Load() != term) {
			lost = time.Now()
		}
		if !lost.IsZero() && time.Since(lost) > 2*s.cfg.HeartbeatTimeout {
			return ErrNotLeader
		}
	}
	return nil
}

// VisibleIndex bounds the state a read that has finished could have seen:
// load it after reading.
func (s *Store) VisibleIndex() uint64 { return s.fsm.visible.Load() }

// StableIndex is the highest stable index this node knows of: every lease
// holder has applied it.
func (s *Store) StableIndex() uint64 { return s.stable.get() }

// WaitStable blocks until this node knows idx to be stable or ctx ends.
func (s *Store) WaitStable(ctx context.Context, idx uint64) error { return s.stable.wait(ctx, idx) }

// NoteStable records a stable index the leader reported (a read index
// answer carries one).
func (s *Store) NoteStable(idx uint64) { s.stable.set(idx) }

// ReadLease identifies the lease a local read was served under.
type ReadLease struct {
	leader bool
	term   uint64 // leader: its term
	from   string // follower: the leader id
	epoch  uint64 // follower: the grant's epoch
}

// LocalReadLease returns the lease under which this node may answer a
// linearizable read from its own state, if it holds one. The caller reads,
// waits until the stable index covers VisibleIndex, then checks LeaseHolds.
func (s *Store) LocalReadLease() (ReadLease, bool) {
	now := time.Now()
	if term := s.readyTerm.Load(); term != 0 && s.leaderReady() {
		return ReadLease{leader: true, term: term}, s.leases.selfValid(term, now)
	}
	_, id := s.raft.LeaderWithID()
	epoch, ok := s.lease.valid(string(id), now)
	return ReadLease{from: string(id), epoch: epoch}, ok
}

// LeaseHolds reports whether l has been in force without a break since it
// was returned.
func (s *Store) LeaseHolds(l ReadLease) bool {
	now := time.Now()
	if l.leader {
		return s.leaderReady() && s.readyTerm.Load() == l.term && s.leases.selfValid(l.term, now)
	}
	_, id := s.raft.LeaderWithID()
	epoch, ok := s.lease.valid(string(id), now)
	return ok && string(id) == l.from && epoch == l.epoch
}

// LeaseRenewInterval is how often a follower should write to its lease
// stream when nothing else happens.
func (s *Store) LeaseRenewInterval() time.Duration { return s.cfg.ReadLease / 4 }

// LeaseAttach (leader) registers the lease stream of follower id; see
// leaseTable.attach.
func (s *Store) LeaseAttach(id string) (uint64, <-chan struct{}, func(), error) {
	return s.leases.attach(id)
}

// LeaseMessage (leader) handles a message on stream of follower id.
func (s *Store) LeaseMessage(id string, stream, seq, applied uint64) error {
	return s.leases.message(id, stream, seq, applied, time.Now())
}

// LeaseGrant (leader) is the current answer for follower id.
func (s *Store) LeaseGrant(id string) (LeaseGrant, error) { return s.leases.grant(id) }

// LeaseNextSeq (follower) numbers a lease message for leader about to be
// sent.
func (s *Store) LeaseNextSeq(leader string) uint64 { return s.lease.next(leader, time.Now()) }

// LeaseUpdate (follower) takes a grant from leader.
func (s *Store) LeaseUpdate(leader string, g LeaseGrant) {
	s.stable.set(g.Stable)
	s.lease.update(leader, g)
}

// LeaseReset (follower) drops the lease (the stream to the leader ended).
func (s *Store) LeaseReset() { s.lease.reset() }
