package guard

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// Remember tells the detector that prefix (an address, or an IPv6 prefix
// of V6Prefix bits, as a Decision names it) has been banned bans times,
// the last at at: bans kept across a restart, so that its next ban is
// longer.
func (d *Detector) Remember(prefix netip.Prefix, bans int, at time.Time) {
	addr := prefix.Addr().Unmap()
	t := at.UnixNano()
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
