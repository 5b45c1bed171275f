// A bounded queue between one producer thread and one consumer thread, where each can do other
// work while it would wait (the producer while the queue is full, the consumer while it is
// empty): verify's log thread hands decoded entries to its replay thread through one, and
// whichever of the two is ahead checks checkpoint signatures meanwhile.
#ifndef TALLY_TOOLS_BOUNDED_QUEUE_H_
#define TALLY_TOOLS_BOUNDED_QUEUE_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>

namespace tally {

template <typename T>
class BoundedQueue {
 public:
  // At most `capacity` items wait (at least one).
  explicit BoundedQueue(size_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {}

  // Appends `item`. While the queue is full, calls idle() (outside the lock) for other work, and
  // waits for room once idle() returns false (nothing left to do). Once the consumer has
  // abandoned the queue, drops `item` and returns at once.
  template <typename Idle>
  void Push(T item, Idle&& idle) {
    std::unique_lock lock(mu_);
    while (queue_.size() >= capacity_ && !abandoned_) {
      lock.unlock();
      const bool worked = idle();
      lock.lock();
      if (!worked) space_.wait(lock, [&] { return queue_.size() < capacity_ || abandoned_; });
    }
    if (abandoned_) return;
    queue_.push_back(std::move(item));
    ready_.notify_one();
  }

  // The next item, or nullopt once closed and empty.
  std::optional<T> Pop() {
    return Pop([] { return false; });
  }

  // Pop, calling idle() (outside the lock) for other work while the queue is empty and open, and
  // waiting once idle() returns false (nothing left to do).
  template <typename Idle>
  std::optional<T> Pop(Idle&& idle) {
    std::unique_lock lock(mu_);
    while (queue_.empty() && !closed_) {
      lock.unlock();
      const bool worked = idle();
      lock.lock();
      if (!worked) ready_.wait(lock, [&] { return !queue_.empty() || closed_; });
    }
    if (queue_.empty()) return std::nullopt;
    T item = std::move(queue_.front());
    queue_.pop_front();
    space_.notify_one();
    return item;
  }

  // No more Pushes: Pop returns what is left, then nullopt.
  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    ready_.notify_all();
  }

  // The consumer stops (it failed): what waits is dropped, and every Push from now on returns at
  // once without its item, so a producer waiting for room is released.
  void Abandon() {
    std::lock_guard lock(mu_);
    abandoned_ = true;
    queue_.clear();
    space_.notify_all();
  }

 private:
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<T> queue_;
  bool closed_ = false;
  bool abandoned_ = false;
};

}  // namespace tally

#endif  // TALLY_TOOLS_BOUNDED_QUEUE_H_
