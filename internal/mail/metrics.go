package mail

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the relay's and the delivery's counters. A nil *Metrics
// counts nothing.
type Metrics struct {
	accepted  *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	delivered prometheus.Counter
	deferred  prometheus.Counter
	bounced   prometheus.Counter
}

// NewMetrics registers the mail metrics with reg; the queue's size and
// age are read from spool at each scrape.
func NewMetrics(reg prometheus.Registerer, spool Spool) *Metrics {
	m := &Metrics{
		accepted:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_mail_accepted_total", Help: "Messages the relay accepted into the queue, by app."}, []string{"app"}),
		rejected:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_mail_rejected_total", Help: "Refusals by the relay, by reason."}, []string{"reason"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_mail_delivered_total", Help: "Recipients whose server accepted a message."}),
		deferred:  prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_mail_deferred_total", Help: "Delivery attempts that left recipients to retry."}),
		bounced:   prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_mail_bounced_total", Help: "Recipients given up on."}),
	}
	reg.MustRegister(m.accepted, m.rejected, m.delivered, m.deferred, m.bounced, queueCollector{spool})
	return m
}

func (m *Metrics) accept(app string) {
	if m != nil {
		m.accepted.WithLabelValues(app).Inc()
	}
}

// reject counts a refusal; reason is one of a few fixed words.
func (m *Metrics) reject(reason string) {
	if m != nil {
		m.rejected.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) outcome(delivered, deferred, bounced int) {
	if m == nil {
		return
	}
	m.delivered.Add(float64(delivered))
	if deferred > 0 {
		m.deferred.Inc()
	}
	m.bounced.Add(float64(bounced))
}

// queueCollector reports the queue at scrape time.
type queueCollector struct{ spool Spool }

var (
	queuedDesc = prometheus.NewDesc("moat_mail_queued", "Messages in the queue, not yet delivered or bounced.", nil, nil)
	ageDesc    = prometheus.NewDesc("moat_mail_queue_oldest_age_seconds", "How long the oldest message in the queue has waited; 0 when it is empty.", nil, nil)
)

func (queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queuedDesc; ch <- ageDesc }

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := c.spool.List(ctx)
	if err != nil {
		return
	}
	age := 0.0
	if len(msgs) > 0 {
		age = time.Since(msgs[0].Accepted).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(len(msgs)))
	ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, age)
}
