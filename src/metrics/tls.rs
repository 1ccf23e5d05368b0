//! The metrics of HTTPS: `teal_tls_handshakes_total{outcome}`,
//! `teal_tls_cert_expiry_seconds{name}` (set at scrape time from the certificates served) and
//! `teal_acme_orders_total{outcome}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

/// The TLS families, registered once.
pub(super) struct TlsFamilies {
    handshakes: Family<OutcomeLabel, Counter>,
    cert_expiry: Family<NameLabel, Gauge>,
    acme_orders: Family<OutcomeLabel, Counter>,
}

impl TlsFamilies {
    pub(super) fn register(registry: &mut Registry) -> TlsFamilies {
        let families = TlsFamilies {
            handshakes: Family::default(),
            cert_expiry: Family::default(),
            acme_orders: Family::default(),
        };
        registry.register(
            "tls_handshakes",
            "TLS handshakes by outcome (ok, error, no_certificate, timeout, closed)",
            families.handshakes.clone(),
        );
        registry.register(
            "tls_cert_expiry_seconds",
            "When each certificate name's certificate expires, in seconds since the Unix epoch",
            families.cert_expiry.clone(),
        );
        registry.register(
            "acme_orders",
            "ACME certificate orders by outcome (issued, failed)",
            families.acme_orders.clone(),
        );
        families
    }

    pub(super) fn handshake(&self, outcome: &'static str) {
        self.handshakes
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub(super) fn acme_order(&self, outcome: &'static str) {
        self.acme_orders
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Sets the expiry gauges to `certs` (name, Unix seconds), forgetting names no longer served.
    /// Where two certificates share a name, the later expiry counts.
    pub(super) fn set_expiries(&self, certs: &[(String, i64)]) {
        self.cert_expiry.clear();
        for (name, expiry) in certs {
            let gauge = self
                .cert_expiry
                .get_or_create(&NameLabel { name: name.clone() });
            if gauge.get() < *expiry {
                gauge.set(*expiry);
            }
        }
    }
}
