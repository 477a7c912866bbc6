// A small Prometheus metrics registry: counters, gauges and histograms with fixed label sets,
// rendered in the text exposition format (version 0.0.4). Updates are lock-free atomics so any
// thread may record; registration and rendering take a mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace flotilla::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  void add(int64_t d) { value_.fetch_add(d, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative counts per bound (+Inf last), sum and count, read at one moment.
  void read(std::vector<uint64_t>& cumulative, double& sum, uint64_t& count) const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // one per bound + Inf
  std::atomic<uint64_t> sum_micro_{0};                // sum in millionths, to stay atomic
  std::atomic<uint64_t> count_{0};
};

// Default latency buckets in seconds: 100µs .. 10s.
std::vector<double> latency_buckets();

class Registry {
 public:
  Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                       const Labels& labels = {});
  // A gauge whose value is computed when scraped; the callback runs on the scraping thread.
  void gauge_callback(const std::string& name, const std::string& help, const Labels& labels,
                      std::function<double()> fn);
  std::string render() const;

 private:
  enum class Type { counter, gauge, histogram };
  struct Series {
    std::string labels;  // rendered: {a="b",c="d"} or empty
    Counter* counter = nullptr;
    Gauge* gauge = nullptr;
    Histogram* histogram = nullptr;
    std::function<double()> fn;
  };
  struct Family {
    std::string help;
    Type type;
    std::vector<Series> series;
  };
  Family& family(const std::string& name, const std::string& help, Type type);
  Series* find(Family& f, const std::string& labels);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
  std::deque<Counter> counters_;
  std::deque<Gauge> gauges_;
  std::deque<std::unique_ptr<Histogram>> histograms_;
};

std::string render_labels(const Labels& labels);

}  // namespace flotilla::metrics
