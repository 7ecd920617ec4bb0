package kbs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the broker's Prometheus metrics. A nil *Metrics records
// nothing, so tests need not register any.
type Metrics struct {
	attestations *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	releases     prometheus.Counter
	denials      *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cvm_kbs_attestations_total", Help: "Attestations by TEE and result.",
		}, []string{"tee", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cvm_kbs_attest_seconds", Help: "Attest latency by TEE.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"tee"}),
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cvm_kbs_releases_total", Help: "Resources released.",
		}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cvm_kbs_denials_total", Help: "Denials by reason.",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.attestations, m.latency, m.releases, m.denials} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) attestation(tee, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	if tee == "" {
		tee = "unknown"
	}
	if outcome == "" {
		outcome = "denied"
	}
	m.attestations.WithLabelValues(tee, outcome).Inc()
	m.latency.WithLabelValues(tee).Observe(d.Seconds())
}

func (m *Metrics) released() {
	if m != nil {
		m.releases.Inc()
	}
}

func (m *Metrics) denied(reason string) {
	if m != nil {
		m.denials.WithLabelValues(reason).Inc()
	}
}
