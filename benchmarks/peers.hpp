// benchmarks/peers.hpp - uniform adapters over framepipe and every peer queue, so that one
// benchmark body measures them all with the same protocol.
//
// Non-blocking protocol:  bool try_push(const T&);  bool try_pop(T&);
// Blocking protocol:      void push_wait(const T&); bool pop_wait(T&)  (false: closed, drained)
//                         void close();  (peers without close() get a poison value, seq 0)
//
// Each adapter states in `name` what it is; the adapters do only what a user of that library
// would write, with the library's recommended fast path where it has one.
#pragma once

#include "common.hpp"

#include <framepipe/ring.hpp>

#include <atomic_queue/atomic_queue.h>
#include <boost/circular_buffer.hpp>
#include <boost/lockfree/queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>
#include <concurrentqueue/blockingconcurrentqueue.h>
#include <concurrentqueue/concurrentqueue.h>
#include <oneapi/tbb/concurrent_queue.h>
#include <readerwriterqueue/readerwritercircularbuffer.h>
#include <readerwriterqueue/readerwriterqueue.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>

namespace fpb {

// ----------------------------------------------------------------------------------- framepipe

// ring<T> used like a try_push / try_pop queue: overflow::drop_newest makes push() a
// non-waiting try_push (rejected == full).
template <class T, framepipe::concurrency C = framepipe::concurrency::mpmc>
struct fp_ring_spin {
    static constexpr const char* name = "framepipe.ring";
    framepipe::ring<T, C> r;
    explicit fp_ring_spin(std::size_t cap) : r(cap, framepipe::overflow::drop_newest) {}
    bool try_push(const T& v) { return r.push(v) == framepipe::push_status::ok; }
    bool try_pop(T& v) {
        auto o = r.try_pop();
        if (!o) {
            return false;
        }
        v = std::move(*o);
        return true;
    }
};

// ring<T> with its blocking API: overflow::block push, pop() parks.
template <class T, framepipe::concurrency C = framepipe::concurrency::mpmc>
struct fp_ring_block {
    static constexpr const char* name = "framepipe.ring";
    static constexpr bool poison = false; // close() ends the consumers
    framepipe::ring<T, C> r;
    explicit fp_ring_block(std::size_t cap) : r(cap, framepipe::overflow::block) {}
    void push_wait(const T& v) { (void)r.push(v); }
    bool pop_wait(T& v) {
        auto o = r.pop();
        if (!o) {
            return false;
        }
        v = std::move(*o);
        return true;
    }
    bool try_pop(T& v) {
        auto o = r.try_pop();
        if (!o) {
            return false;
        }
        v = std::move(*o);
        return true;
    }
    void close() { r.close(); }
};

// ring<T> as a drop-oldest ring (the overflow scenario): push never fails.
template <class T, framepipe::concurrency C = framepipe::concurrency::mpmc>
struct fp_ring_drop_oldest {
    static constexpr const char* name = "framepipe.ring_drop_oldest";
    framepipe::ring<T, C> r;
    explicit fp_ring_drop_oldest(std::size_t cap) : r(cap, framepipe::overflow::drop_oldest) {}
    bool push_drop_oldest(const T& v) { return r.push(v) == framepipe::push_status::evicted; }
    bool try_pop(T& v) {
        auto o = r.try_pop();
        if (!o) {
            return false;
        }
        v = std::move(*o);
        return true;
    }
};

// ------------------------------------------------------------------------------- moodycamel

template <class T>
struct mc_rwq { // moodycamel::ReaderWriterQueue (SPSC); try_enqueue never allocates
    static constexpr const char* name = "moodycamel.ReaderWriterQueue";
    moodycamel::ReaderWriterQueue<T> q;
    explicit mc_rwq(std::size_t cap) : q(cap) {}
    bool try_push(const T& v) { return q.try_enqueue(v); }
    bool try_pop(T& v) { return q.try_dequeue(v); }
};

template <class T>
struct mc_brwq { // moodycamel::BlockingReaderWriterQueue (SPSC, semaphore wake-ups)
    static constexpr const char* name = "moodycamel.BlockingReaderWriterQueue";
    static constexpr bool poison = true; // close() enqueues one poison value (seq 0)
    moodycamel::BlockingReaderWriterQueue<T> q;
    explicit mc_brwq(std::size_t cap) : q(cap) {}
    bool try_push(const T& v) { return q.try_enqueue(v); }
    bool try_pop(T& v) { return q.try_dequeue(v); }
    void push_wait(const T& v) {
        while (!q.try_enqueue(v)) {
            cpu_relax(); // unbounded enqueue() would allocate; a bounded user spins or drops
        }
    }
    bool pop_wait(T& v) {
        q.wait_dequeue(v);
        return seq_of(v) != 0;
    }
    void close() { q.enqueue(make_item<T>(0)); }
};

template <class T>
struct mc_rwcb { // moodycamel::BlockingReaderWriterCircularBuffer (bounded SPSC)
    static constexpr const char* name = "moodycamel.ReaderWriterCircularBuffer";
    static constexpr bool poison = true; // close() enqueues one poison value (seq 0)
    moodycamel::BlockingReaderWriterCircularBuffer<T> q;
    explicit mc_rwcb(std::size_t cap) : q(cap) {}
    bool try_push(const T& v) { return q.try_enqueue(v); }
    bool try_pop(T& v) { return q.try_dequeue(v); }
    void push_wait(const T& v) { q.wait_enqueue(v); }
    bool pop_wait(T& v) {
        q.wait_dequeue(v);
        return seq_of(v) != 0;
    }
    void close() { q.wait_enqueue(make_item<T>(0)); }
};

template <class T>
struct mc_cq { // moodycamel::ConcurrentQueue (MPMC) with producer / consumer tokens (SPSC use)
    static constexpr const char* name = "moodycamel.ConcurrentQueue";
    moodycamel::ConcurrentQueue<T> q;
    moodycamel::ProducerToken ptok;
    moodycamel::ConsumerToken ctok;
    explicit mc_cq(std::size_t cap) : q(cap), ptok(q), ctok(q) {}
    bool try_push(const T& v) { return q.try_enqueue(ptok, v); }
    bool try_pop(T& v) { return q.try_dequeue(ctok, v); }
};

template <class T>
struct mc_bcq { // moodycamel::BlockingConcurrentQueue (MPMC, unbounded enqueue, blocking pop)
    static constexpr const char* name = "moodycamel.BlockingConcurrentQueue";
    static constexpr bool poison = true; // close() enqueues one poison value (seq 0)
    moodycamel::BlockingConcurrentQueue<T> q;
    explicit mc_bcq(std::size_t cap) : q(cap) {}
    bool try_push(const T& v) { return q.try_enqueue(v); }
    bool try_pop(T& v) { return q.try_dequeue(v); }
    void push_wait(const T& v) { (void)q.enqueue(v); }
    bool pop_wait(T& v) {
        q.wait_dequeue(v);
        return seq_of(v) != 0;
    }
    void close() { (void)q.enqueue(make_item<T>(0)); }
};

// ------------------------------------------------------------------------------ atomic_queue

// The 8-byte handle uses AtomicQueue (values in atomics, 0 = empty); the 64-byte struct uses
// AtomicQueue2 (a state byte per slot). Both with the library's default tuning.
template <class T, unsigned N, bool SPSC>
using aq_queue_t =
    std::conditional_t<std::is_same_v<T, h8>,
                       atomic_queue::AtomicQueue<std::uint64_t, N, 0, true, true, false, SPSC>,
                       atomic_queue::AtomicQueue2<T, N, true, true, false, SPSC>>;

template <class T, unsigned N, bool SPSC>
struct aq {
    static constexpr const char* name = SPSC ? "atomic_queue.spsc" : "atomic_queue";
    std::unique_ptr<aq_queue_t<T, N, SPSC>> q = std::make_unique<aq_queue_t<T, N, SPSC>>();
    explicit aq(std::size_t /*cap: compile time*/) {}
    bool try_push(const T& v) { return q->try_push(v); }
    bool try_pop(T& v) { return q->try_pop(v); }
};

// ----------------------------------------------------------------------------- boost.lockfree

template <class T, std::size_t N>
struct boost_spsc {
    static constexpr const char* name = "boost.spsc_queue";
    std::unique_ptr<boost::lockfree::spsc_queue<T, boost::lockfree::capacity<N>>> q =
        std::make_unique<boost::lockfree::spsc_queue<T, boost::lockfree::capacity<N>>>();
    explicit boost_spsc(std::size_t /*cap: compile time*/) {}
    bool try_push(const T& v) { return q->push(v); }
    bool try_pop(T& v) { return q->pop(v); }
};

template <class T, std::size_t N>
struct boost_mpmc {
    static constexpr const char* name = "boost.lockfree.queue";
    std::unique_ptr<boost::lockfree::queue<T, boost::lockfree::capacity<N>>> q =
        std::make_unique<boost::lockfree::queue<T, boost::lockfree::capacity<N>>>();
    explicit boost_mpmc(std::size_t /*cap: compile time*/) {}
    bool try_push(const T& v) { return q->bounded_push(v); }
    bool try_pop(T& v) { return q->pop(v); }
};

// -------------------------------------------------------------------------------------- TBB

template <class T>
struct tbb_cbq { // tbb::concurrent_bounded_queue: try_* and blocking push / pop
    static constexpr const char* name = "tbb.concurrent_bounded_queue";
    static constexpr bool poison = true; // close() enqueues one poison value (seq 0)
    tbb::concurrent_bounded_queue<T> q;
    explicit tbb_cbq(std::size_t cap) { q.set_capacity(static_cast<std::ptrdiff_t>(cap)); }
    bool try_push(const T& v) { return q.try_push(v); }
    bool try_pop(T& v) { return q.try_pop(v); }
    void push_wait(const T& v) { q.push(v); }
    bool pop_wait(T& v) {
        q.pop(v);
        return seq_of(v) != 0;
    }
    void close() { q.push(make_item<T>(0)); }
};

// ------------------------------------------------------------------------- std baseline

// std::mutex + std::condition_variable + std::deque, bounded: what the source documents use.
template <class T>
class cv_queue {
public:
    static constexpr const char* name = "std.mutex+condvar+deque";
    static constexpr bool poison = false;
    explicit cv_queue(std::size_t cap) : cap_(cap) {}
    bool try_push(const T& v) {
        {
            std::lock_guard<std::mutex> l(m_);
            if (d_.size() >= cap_) {
                return false;
            }
            d_.push_back(v);
        }
        not_empty_.notify_one();
        return true;
    }
    bool try_pop(T& v) {
        {
            std::lock_guard<std::mutex> l(m_);
            if (d_.empty()) {
                return false;
            }
            v = std::move(d_.front());
            d_.pop_front();
        }
        not_full_.notify_one();
        return true;
    }
    void push_wait(const T& v) {
        {
            std::unique_lock<std::mutex> l(m_);
            not_full_.wait(l, [&] { return d_.size() < cap_ || closed_; });
            if (closed_) {
                return;
            }
            d_.push_back(v);
        }
        not_empty_.notify_one();
    }
    bool pop_wait(T& v) {
        {
            std::unique_lock<std::mutex> l(m_);
            not_empty_.wait(l, [&] { return !d_.empty() || closed_; });
            if (d_.empty()) {
                return false;
            }
            v = std::move(d_.front());
            d_.pop_front();
        }
        not_full_.notify_one();
        return true;
    }
    void close() {
        {
            std::lock_guard<std::mutex> l(m_);
            closed_ = true;
        }
        not_empty_.notify_all();
        not_full_.notify_all();
    }

private:
    std::mutex m_;
    std::condition_variable not_empty_;
    std::condition_variable not_full_;
    std::deque<T> d_;
    std::size_t cap_;
    bool closed_ = false;
};

// --------------------------------------------------------- drop-oldest emulations (overflow)

// A lock-free MPMC queue made drop-oldest the usual way: when try_push fails, the producer
// try_pops the oldest item and tries again. (SPSC queues cannot do this: only the consumer may
// pop.)
template <class Q>
struct drop_oldest_emulation {
    static constexpr const char* name = Q::name;
    Q q;
    explicit drop_oldest_emulation(std::size_t cap) : q(cap) {}
    template <class T>
    bool push_drop_oldest(const T& v) {
        bool evicted = false;
        while (!q.try_push(v)) {
            T junk;
            if (q.try_pop(junk)) {
                evicted = true;
            }
        }
        return evicted;
    }
    template <class T>
    bool try_pop(T& v) {
        return q.try_pop(v);
    }
};

// std::mutex + boost::circular_buffer: push_back on a full buffer overwrites the oldest.
template <class T>
struct mutex_circular_buffer {
    static constexpr const char* name = "std.mutex+boost.circular_buffer";
    std::mutex m;
    boost::circular_buffer<T> cb;
    explicit mutex_circular_buffer(std::size_t cap) : cb(cap) {}
    bool push_drop_oldest(const T& v) {
        std::lock_guard<std::mutex> l(m);
        const bool full = cb.full();
        cb.push_back(v);
        return full;
    }
    bool try_pop(T& v) {
        std::lock_guard<std::mutex> l(m);
        if (cb.empty()) {
            return false;
        }
        v = std::move(cb.front());
        cb.pop_front();
        return true;
    }
};

// std::mutex + std::deque, dropping the front when full.
template <class T>
struct mutex_deque_drop_oldest {
    static constexpr const char* name = "std.mutex+deque";
    std::mutex m;
    std::deque<T> d;
    std::size_t cap;
    explicit mutex_deque_drop_oldest(std::size_t c) : cap(c) {}
    bool push_drop_oldest(const T& v) {
        std::lock_guard<std::mutex> l(m);
        bool evicted = false;
        if (d.size() >= cap) {
            d.pop_front();
            evicted = true;
        }
        d.push_back(v);
        return evicted;
    }
    bool try_pop(T& v) {
        std::lock_guard<std::mutex> l(m);
        if (d.empty()) {
            return false;
        }
        v = std::move(d.front());
        d.pop_front();
        return true;
    }
};

} // namespace fpb
