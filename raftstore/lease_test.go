package raftstore

import (
	"testing"
	"time"
)

// leaseFixture drives a leaseTable with a fake applied index and clock.
type leaseFixture struct {
	t       *testing.T
	applied uint64
	stable  *indexWaiter
	lt      *leaseTable
	now     time.Time
	streams map[string]uint64 // follower id -> its attached stream
}

const (
	testLease = 500 * time.Millisecond
	testGuard = time.Second
)

func newLeaseFixture(t *testing.T) *leaseFixture {
	f := &leaseFixture{t: t, stable: newIndexWaiter(), now: time.Unix(1000, 0), streams: map[string]uint64{}}
	f.lt = newLeaseTable(testLease, testLease, testGuard, func() uint64 { return f.applied }, f.stable)
	return f
}

func (f *leaseFixture) at(d time.Duration) time.Time { return f.now.Add(d) }

// leading starts term 1 at time 0 and gives the leader its own lease from
// a VerifyLeader begun at began.
func (f *leaseFixture) leading(began time.Duration) {
	f.lt.start(1, f.now)
	f.lt.extendSelf(1, f.at(began))
}

// msg sends a message on id's stream, attaching one first if needed.
func (f *leaseFixture) msg(id string, seq, applied uint64, at time.Duration) {
	f.t.Helper()
	if _, ok := f.streams[id]; !ok {
		f.reattach(id)
	}
	if err := f.lt.message(id, f.streams[id], seq, applied, f.at(at)); err != nil {
		f.t.Fatalf("message: %v", err)
	}
}

// reattach opens a new stream for id (a reconnect or a restart).
func (f *leaseFixture) reattach(id string) {
	f.t.Helper()
	token, _, _, err := f.lt.attach(id)
	if err != nil {
		f.t.Fatalf("attach: %v", err)
	}
	f.streams[id] = token
}

func (f *leaseFixture) grant(id string) LeaseGrant {
	f.t.Helper()
	g, err := f.lt.grant(id)
	if err != nil {
		f.t.Fatalf("grant: %v", err)
	}
	return g
}

func TestLeaseNewLeaderWaitsOutOldLeases(t *testing.T) {
	f := newLeaseFixture(t)
	f.applied = 10
	f.leading(0)
	notBefore := testLease + f.lt.margin
	cases := []struct {
		at        time.Duration
		stable    uint64
		selfValid bool
	}{
		{at: 0, stable: 0},
		{at: notBefore - time.Millisecond, stable: 0},
		// At notBefore the self lease (from a VerifyLeader at 0) has run
		// out too: nothing until the leader confirms again.
		{at: notBefore, stable: 10},
	}
	for _, c := range cases {
		f.lt.recompute(f.at(c.at))
		if got := f.stable.get(); got != c.stable {
			t.Errorf("at %v: stable %d, want %d", c.at, got, c.stable)
		}
		if got := f.lt.selfValid(1, f.at(c.at)); got != c.selfValid {
			t.Errorf("at %v: self lease valid %v, want %v", c.at, got, c.selfValid)
		}
	}
	// A VerifyLeader confirmed after notBefore gives the leader its lease;
	// a holder that has applied the stable index gets one too.
	f.lt.extendSelf(1, f.at(notBefore))
	if !f.lt.selfValid(1, f.at(notBefore+time.Millisecond)) {
		t.Fatal("self lease not valid after a VerifyLeader")
	}
	f.msg("b", 1, 10, notBefore+time.Millisecond)
	if g := f.grant("b"); !g.Active || g.Seq != 1 || g.Stable != 10 {
		t.Fatalf("grant %+v, want active for seq 1 with stable 10", g)
	}
	// Another term is not this one.
	if f.lt.selfValid(2, f.at(notBefore+time.Millisecond)) {
		t.Fatal("self lease valid for another term")
	}
}

// ready returns a fixture past notBefore with a fresh self lease at base.
func readyFixture(t *testing.T) (*leaseFixture, time.Duration) {
	f := newLeaseFixture(t)
	f.applied = 10
	f.leading(0)
	base := testLease + f.lt.margin
	f.lt.extendSelf(1, f.at(base))
	f.lt.recompute(f.at(base))
	return f, base
}

func TestLeaseHoldersBoundStable(t *testing.T) {
	f, base := readyFixture(t)
	// A holder behind the stable index stays pending.
	f.msg("b", 1, 9, base)
	if g := f.grant("b"); g.Active {
		t.Fatalf("holder behind stable got a lease: %+v", g)
	}
	// Caught up: active, and now it bounds the stable index.
	f.msg("b", 2, 10, base+time.Millisecond)
	if g := f.grant("b"); !g.Active || g.Seq != 2 {
		t.Fatalf("grant %+v, want active at seq 2", g)
	}
	f.applied = 15
	f.lt.recompute(f.at(base + 2*time.Millisecond))
	if got := f.stable.get(); got != 10 {
		t.Fatalf("stable %d with a holder at 10, want 10", got)
	}
	f.msg("b", 3, 14, base+3*time.Millisecond)
	if got := f.stable.get(); got != 14 {
		t.Fatalf("stable %d, want 14", got)
	}
	f.msg("b", 4, 15, base+4*time.Millisecond)
	if got := f.stable.get(); got != 15 {
		t.Fatalf("stable %d, want 15", got)
	}
}

func TestLeaseExpiryFreesWrites(t *testing.T) {
	f, base := readyFixture(t)
	f.msg("b", 1, 10, base)
	f.applied = 20
	// The holder falls silent (partitioned): the stable index waits for it
	// until its lease, plus the leader's margin, has run out.
	cases := []struct {
		at     time.Duration
		stable uint64
	}{
		{base + testLease, 10},
		{base + testLease + f.lt.margin, 10},
		{base + testLease + f.lt.margin + time.Millisecond, 20},
	}
	for _, c := range cases {
		f.lt.recompute(f.at(c.at))
		if got := f.stable.get(); got != c.stable {
			t.Errorf("at %v: stable %d, want %d", c.at, got, c.stable)
		}
	}
	if g := f.grant("b"); g.Active {
		t.Fatalf("expired holder still active: %+v", g)
	}
}

func TestLeaseStuckHolderIsRevoked(t *testing.T) {
	f, base := readyFixture(t)
	f.msg("b", 1, 10, base)
	f.applied = 11
	f.lt.recompute(f.at(base)) // b is behind from here
	// It keeps talking but applies nothing: renewed until lagLimit, then
	// no more (it keeps bounding the stable index until its last grant
	// runs out).
	f.msg("b", 2, 10, base+f.lt.lagLimit)
	if g := f.grant("b"); !g.Active || g.Seq != 2 {
		t.Fatalf("grant %+v, want renewed at seq 2", g)
	}
	f.lt.extendSelf(1, f.at(base+f.lt.lagLimit))
	f.msg("b", 3, 10, base+f.lt.lagLimit+time.Millisecond)
	if g := f.grant("b"); g.Active {
		t.Fatalf("stuck holder renewed: %+v", g)
	}
	if got := f.stable.get(); got != 10 {
		t.Fatalf("stable %d while the revoked lease runs, want 10", got)
	}
	end := base + f.lt.lagLimit + testLease + f.lt.margin + time.Millisecond
	f.lt.recompute(f.at(end))
	if got := f.stable.get(); got != 11 {
		t.Fatalf("stable %d after the revoked lease ran out, want 11", got)
	}
}

func TestLeaseIdleHolderIsNotRevoked(t *testing.T) {
	f, base := readyFixture(t)
	f.msg("b", 1, 10, base)
	// Idle for long, then a write: the holder's next message, sent before
	// it applied the write, must not count as stuck.
	later := base + 10*testLease
	f.lt.extendSelf(1, f.at(later))
	f.msg("b", 2, 10, later-time.Millisecond) // renewal while idle (expired by now, re-activated)
	f.applied = 11
	f.lt.recompute(f.at(later))
	f.msg("b", 3, 10, later+time.Millisecond)
	if g := f.grant("b"); !g.Active || g.Seq != 3 {
		t.Fatalf("grant %+v, want renewed at seq 3", g)
	}
}

func TestLeaseTransferStopsLeases(t *testing.T) {
	f, base := readyFixture(t)
	f.msg("b", 1, 10, base)
	// Two transfers overlap; the first to end must not restore the lease.
	f.lt.setTransferring(true, f.at(base))
	f.lt.setTransferring(true, f.at(base))
	f.lt.setTransferring(false, f.at(base+time.Millisecond))
	if f.lt.selfValid(1, f.at(base+2*time.Millisecond)) {
		t.Fatal("self lease valid during a transfer")
	}
	f.msg("b", 2, 10, base+2*time.Millisecond)
	if g := f.grant("b"); g.Seq != 1 {
		t.Fatalf("lease renewed during a transfer: %+v", g)
	}
	f.lt.extendSelf(1, f.at(base+3*time.Millisecond))
	if f.lt.selfValid(1, f.at(base+4*time.Millisecond)) {
		t.Fatal("self lease extended during a transfer")
	}
	// After the last one ends (it may have timed out with its TimeoutNow
	// still on the way): nothing before the guard has passed.
	end := base + 5*time.Millisecond
	f.lt.setTransferring(false, f.at(end))
	f.lt.extendSelf(1, f.at(end+testGuard-time.Millisecond))
	if f.lt.selfValid(1, f.at(end+testGuard-time.Millisecond/2)) {
		t.Fatal("self lease within the guard after a transfer")
	}
	f.lt.extendSelf(1, f.at(end+testGuard))
	if !f.lt.selfValid(1, f.at(end+testGuard+time.Millisecond)) {
		t.Fatal("no self lease after the guard")
	}
	f.lt.stop()
	if _, err := f.lt.grant("b"); err == nil {
		t.Fatal("grant after leadership ended")
	}
	if err := f.lt.message("b", f.streams["b"], 3, 10, f.at(base)); err == nil {
		t.Fatal("message accepted after leadership ended")
	}
}

// A follower that comes back (new stream) on older state than it reported
// before must not get a lease on the strength of what it reported then.
func TestLeaseReattachForgetsReports(t *testing.T) {
	f, base := readyFixture(t)
	f.msg("b", 1, 10, base)
	if g := f.grant("b"); !g.Active {
		t.Fatalf("no lease: %+v", g)
	}
	f.applied = 20
	f.msg("b", 2, 20, base+time.Millisecond)
	old := f.streams["b"]
	f.reattach("b") // restarted, its state lost back to index 5
	f.msg("b", 1, 5, base+2*time.Millisecond)
	if g := f.grant("b"); g.Active {
		t.Fatalf("restarted follower at 5 holds a lease with stable %d: %+v", f.stable.get(), g)
	}
	// Messages of the replaced stream are ignored.
	if err := f.lt.message("b", old, 3, 20, f.at(base+3*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if g := f.grant("b"); g.Active {
		t.Fatalf("old stream's report revived the lease: %+v", g)
	}
	// Its earlier lease still counts until it runs out: the stable index
	// does not move past what the follower holds meanwhile.
	f.applied = 30
	f.lt.recompute(f.at(base + 4*time.Millisecond))
	if got := f.stable.get(); got != 20 {
		t.Fatalf("stable %d while the old lease runs, want 20", got)
	}
	// Caught up after its old lease ran out: a new lease, a new epoch.
	later := base + testLease + f.lt.margin + 10*time.Millisecond
	f.lt.extendSelf(1, f.at(later))
	f.msg("b", 2, 30, later)
	g := f.grant("b")
	if !g.Active || g.Seq != 2 {
		t.Fatalf("caught-up follower: %+v, want a lease at seq 2", g)
	}
	if g.Epoch>>32 != 1 {
		t.Fatalf("epoch %x does not carry the term", g.Epoch)
	}
}

func TestLeaseAttachWakes(t *testing.T) {
	f, base := readyFixture(t)
	token, news, detach, err := f.lt.attach("b")
	if err != nil {
		t.Fatal(err)
	}
	defer detach()
	f.streams["b"] = token
	f.msg("b", 1, 10, base)
	select {
	case <-news:
	default:
		t.Fatal("no news after a message")
	}
	f.lt.stop()
	select {
	case _, ok := <-news:
		if ok {
			<-news // drain a pending signal; the next receive sees the close
		}
	default:
		t.Fatal("stream not woken when leadership ended")
	}
}

func TestFollowerLease(t *testing.T) {
	t0 := time.Unix(2000, 0)
	fl := &followerLease{dur: testLease}
	s1 := fl.next("L", t0)
	s2 := fl.next("L", t0.Add(100*time.Millisecond))
	if _, ok := fl.valid("L", t0); ok {
		t.Fatal("valid before any grant")
	}
	// The lease runs from when the granting message was sent.
	fl.update("L", LeaseGrant{Seq: s1, Active: true, Epoch: 7})
	cases := []struct {
		leader string
		at     time.Duration
		ok     bool
	}{
		{"L", 0, true},
		{"L", testLease - time.Millisecond, true},
		{"L", testLease, false},
		{"M", 0, false}, // another leader
		{"", 0, false},
	}
	for _, c := range cases {
		if e, ok := fl.valid(c.leader, t0.Add(c.at)); ok != c.ok || (ok && e != 7) {
			t.Errorf("valid(%q, +%v) = %d, %v; want ok=%v", c.leader, c.at, e, ok, c.ok)
		}
	}
	fl.update("L", LeaseGrant{Seq: s2, Active: true, Epoch: 7})
	if _, ok := fl.valid("L", t0.Add(testLease)); !ok {
		t.Fatal("renewal did not extend the lease")
	}
	// An older grant arriving late never shortens it.
	fl.update("L", LeaseGrant{Seq: s1, Active: true, Epoch: 7})
	if _, ok := fl.valid("L", t0.Add(testLease)); !ok {
		t.Fatal("a late grant shortened the lease")
	}
	// A new epoch is a new lease.
	fl.update("L", LeaseGrant{Seq: s2, Active: true, Epoch: 8})
	if e, _ := fl.valid("L", t0); e != 8 {
		t.Fatalf("epoch %d, want 8", e)
	}
	// Grants of another leader are ignored; revocation and reset end it.
	fl.update("M", LeaseGrant{Seq: s2, Active: false})
	if _, ok := fl.valid("L", t0); !ok {
		t.Fatal("another leader's grant changed the lease")
	}
	fl.update("L", LeaseGrant{Seq: s2, Active: false})
	if _, ok := fl.valid("L", t0); ok {
		t.Fatal("valid after the leader revoked it")
	}
	fl.update("L", LeaseGrant{Seq: s2, Active: true, Epoch: 9})
	fl.reset()
	if _, ok := fl.valid("L", t0); ok {
		t.Fatal("valid after reset")
	}
	// A new leader starts from nothing.
	s3 := fl.next("M", t0)
	fl.update("M", LeaseGrant{Seq: s2, Active: true, Epoch: 1})
	if _, ok := fl.valid("M", t0); ok {
		t.Fatal("a grant for a message sent to the old leader counted")
	}
	fl.update("M", LeaseGrant{Seq: s3, Active: true, Epoch: 1})
	if _, ok := fl.valid("M", t0); !ok {
		t.Fatal("new leader's grant not taken")
	}
}
