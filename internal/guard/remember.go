package guard

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// Remember tells the detector that prefix (an address, or an IPv6 prefix
// of V6Prefix bits, as a Decision names it) has been banned bans times,
// the last ending at end: bans kept across a restart, so that its next
// ban is longer. History is kept for MaxBanTime after the last ban ends.
func (d *Detector) Remember(prefix netip.Prefix, bans int, end time.Time) {
	addr := prefix.Addr().Unmap()
	t := end.UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	if addr.Is4() {
		if prefix.Bits() != 32 && prefix.Bits() != 128 {
			return
		}
		b := addr.As4()
		remember(&d.v4, binary.BigEndian.Uint32(b[:]), bans, t)
		return
	}
	if prefix.Bits() != d.policy.V6Prefix {
		return
	}
	remember(&d.v6, d.key(addr).Addr().As16(), bans, t)
}

func remember[K, C comparable](f *family[K, C], k K, bans int, t int64) {
	r, ok := f.records[k]
	if !ok {
		r.at = none
	}
	if r.more == nil {
		r.more = &history{}
	}
	r.more.bans = max(r.more.bans, bans)
	r.more.lastBan = max(r.more.lastBan, t)
	f.records[k] = r
}

// Forget drops what the detector holds on prefix: its attempts and its
// ban history (a ban lifted by hand is forgiven).
func (d *Detector) Forget(prefix netip.Prefix) {
	addr := prefix.Addr().Unmap()
	d.mu.Lock()
	defer d.mu.Unlock()
	if addr.Is4() {
		b := addr.As4()
		delete(d.v4.records, binary.BigEndian.Uint32(b[:]))
		return
	}
	delete(d.v6.records, d.key(addr).Addr().As16())
}
