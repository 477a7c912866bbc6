#include "common/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <stdexcept>

namespace flotilla::metrics {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_micro_.fetch_add(static_cast<uint64_t>(std::llround(std::max(v, 0.0) * 1e6)), std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

void Histogram::read(std::vector<uint64_t>& cumulative, double& sum, uint64_t& count) const {
  cumulative.assign(bounds_.size() + 1, 0);
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    acc += buckets_[i].load(std::memory_order_relaxed);
    cumulative[i] = acc;
  }
  count = acc;  // consistent with the buckets even while others observe
  sum = static_cast<double>(sum_micro_.load(std::memory_order_relaxed)) / 1e6;
}

std::vector<double> latency_buckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

namespace {
std::string escape(const std::string& v) {
  std::string o;
  for (char c : v) {
    if (c == '\\') o += "\\\\";
    else if (c == '"') o += "\\\"";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  // Prefer a short form when it round-trips.
  char shortbuf[64];
  std::snprintf(shortbuf, sizeof shortbuf, "%g", v);
  if (std::strtod(shortbuf, nullptr) == v) return shortbuf;
  return buf;
}

std::string with_label(const std::string& labels, const std::string& extra) {
  if (labels.empty()) return "{" + extra + "}";
  return labels.substr(0, labels.size() - 1) + "," + extra + "}";
}
}  // namespace

std::string render_labels(const Labels& labels) {
  if (labels.empty()) return {};
  std::string s = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) s += ",";
    s += labels[i].first + "=\"" + escape(labels[i].second) + "\"";
  }
  return s + "}";
}

Registry::Family& Registry::family(const std::string& name, const std::string& help, Type type) {
  auto [it, inserted] = families_.try_emplace(name);
  if (inserted) {
    it->second.help = help;
    it->second.type = type;
  } else if (it->second.type != type) {
    throw std::logic_error("metric " + name + " registered with two types");
  }
  return it->second;
}

Registry::Series* Registry::find(Family& f, const std::string& labels) {
  for (auto& s : f.series)
    if (s.labels == labels) return &s;
  return nullptr;
}

Counter& Registry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mu_);
  auto& f = family(name, help, Type::counter);
  auto l = render_labels(labels);
  if (auto* s = find(f, l)) return *s->counter;
  auto& c = counters_.emplace_back();
  f.series.push_back(Series{l, &c, nullptr, nullptr, {}});
  return c;
}

Gauge& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mu_);
  auto& f = family(name, help, Type::gauge);
  auto l = render_labels(labels);
  if (auto* s = find(f, l); s && s->gauge) return *s->gauge;
  auto& g = gauges_.emplace_back();
  f.series.push_back(Series{l, nullptr, &g, nullptr, {}});
  return g;
}

Histogram& Registry::histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                               const Labels& labels) {
  std::lock_guard lock(mu_);
  auto& f = family(name, help, Type::histogram);
  auto l = render_labels(labels);
  if (auto* s = find(f, l)) return *s->histogram;
  auto& h = histograms_.emplace_back(std::make_unique<Histogram>(std::move(bounds)));
  f.series.push_back(Series{l, nullptr, nullptr, h.get(), {}});
  return *h;
}

void Registry::gauge_callback(const std::string& name, const std::string& help, const Labels& labels,
                              std::function<double()> fn) {
  std::lock_guard lock(mu_);
  auto& f = family(name, help, Type::gauge);
  f.series.push_back(Series{render_labels(labels), nullptr, nullptr, nullptr, std::move(fn)});
}

std::string Registry::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n";
    out += "# TYPE " + name + " " +
           (f.type == Type::counter ? "counter" : f.type == Type::gauge ? "gauge" : "histogram") + "\n";
    for (const auto& s : f.series) {
      if (s.counter) {
        out += name + s.labels + " " + std::to_string(s.counter->value()) + "\n";
      } else if (s.gauge) {
        out += name + s.labels + " " + std::to_string(s.gauge->value()) + "\n";
      } else if (s.fn) {
        out += name + s.labels + " " + number(s.fn()) + "\n";
      } else if (s.histogram) {
        std::vector<uint64_t> cum;
        double sum;
        uint64_t count;
        s.histogram->read(cum, sum, count);
        const auto& b = s.histogram->bounds();
        for (size_t i = 0; i < b.size(); ++i)
          out += name + "_bucket" + with_label(s.labels, "le=\"" + number(b[i]) + "\"") + " " +
                 std::to_string(cum[i]) + "\n";
        out += name + "_bucket" + with_label(s.labels, "le=\"+Inf\"") + " " + std::to_string(cum.back()) + "\n";
        out += name + "_sum" + s.labels + " " + number(sum) + "\n";
        out += name + "_count" + s.labels + " " + std::to_string(count) + "\n";
      }
    }
  }
  return out;
}

}  // namespace flotilla::metrics
