package registry

import "container/heap"

// tracker is the expiry structure of the liveness core: a min-heap of agents keyed by
// their next deadline, with each agent remembering its index so that a deadline can be
// moved in O(log n). Heartbeats never touch it: an agent's entry keeps the deadline
// computed when it was last evaluated, which can only be earlier than the real one.
// When the entry comes due the sweeper re-checks the real last-seen time and pushes
// the agent back with its true deadline (etcd's lessor and ZooKeeper's ExpiryQueue do
// the same). Only what is due is ever touched.
//
// tracker is not safe for concurrent use; the engine guards it with trackMu.
type tracker struct {
	h deadlineHeap[*agent]
}

// set schedules a at deadline (monotonic nanoseconds), adding or moving its entry.
func (t *tracker) set(a *agent, deadline int64) {
	a.deadline = deadline
	if a.index >= 0 {
		heap.Fix(&t.h, a.index)
		return
	}
	heap.Push(&t.h, a)
}

// remove takes a out of the tracker if it is in it.
func (t *tracker) remove(a *agent) {
	if a.index >= 0 {
		heap.Remove(&t.h, a.index)
	}
}

// popDue removes and appends to buf up to max agents whose deadline is strictly before
// now, earliest first.
func (t *tracker) popDue(now int64, max int, buf []*agent) []*agent {
	for len(t.h) > 0 && len(buf) < max && t.h[0].deadline < now {
		buf = append(buf, heap.Pop(&t.h).(*agent))
	}
	return buf
}

// next returns the earliest deadline and whether there is one.
func (t *tracker) next() (int64, bool) {
	if len(t.h) == 0 {
		return 0, false
	}
	return t.h[0].deadline, true
}

// len returns the number of scheduled agents.
func (t *tracker) len() int { return len(t.h) }

// timed is an entry of a deadlineHeap: it knows its deadline and remembers its index.
type timed interface {
	due() int64
	setIndex(i int)
}

// deadlineHeap is a min-heap of entries by deadline for container/heap, shared by the
// agent tracker and the lease table.
type deadlineHeap[T timed] []T

func (h deadlineHeap[T]) Len() int           { return len(h) }
func (h deadlineHeap[T]) Less(i, j int) bool { return h[i].due() < h[j].due() }
func (h deadlineHeap[T]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].setIndex(i)
	h[j].setIndex(j)
}
func (h *deadlineHeap[T]) Push(x any) {
	v := x.(T)
	v.setIndex(len(*h))
	*h = append(*h, v)
}
func (h *deadlineHeap[T]) Pop() any {
	old := *h
	var zero T
	v := old[len(old)-1]
	old[len(old)-1] = zero
	v.setIndex(-1)
	*h = old[:len(old)-1]
	return v
}

func (a *agent) due() int64     { return a.deadline }
func (a *agent) setIndex(i int) { a.index = i }
