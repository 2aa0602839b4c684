package maildns

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Finding is what DNS says about one record.
type Finding struct {
	// Record is the record as it should be published.
	Record Record
	// OK is true when DNS has the record as it should be, in meaning if
	// not byte for byte.
	OK bool
	// Found are the TXT values at the record's name, the strings of each
	// record joined.
	Found []string
	// Problem says in plain words what is wrong, like "no TXT record at
	// _dmarc.example.com"; empty when OK.
	Problem string
	// Fix says in plain words what to do about it, with the record to
	// publish in zone-file syntax; empty when OK.
	Fix string
}

// Check looks each record up through resolver ("host:port"; the servers in
// /etc/resolv.conf when empty) and says whether it is published as it
// should be. It compares meaning, not bytes, the way receivers read the
// records:
//
//   - a DKIM key record is OK if it is the only TXT record at its name and
//     its k= and p= are the key's, whatever the order of tags or the
//     spaces in them;
//   - an SPF record is OK if it is the only "v=spf1" record at its name,
//     it authorises every ip4:, ip6:, include: and a mechanism of the
//     wanted record, and it ends in -all or ~all;
//   - a DMARC record is OK if it is the only "v=DMARC1" record at its
//     name and its p= is quarantine or reject.
//
// A record of another kind must be there as it is. A lookup that fails
// (a timeout, SERVFAIL) is a Finding that says so, never an OK.
func Check(ctx context.Context, resolver string, records []Record) []Finding {
	findings := make([]Finding, len(records))
	srvs, err := servers(resolver)
	if err != nil {
		for i, r := range records {
			findings[i] = Finding{
				Record:  r,
				Problem: fmt.Sprintf("the lookup of TXT %s failed: %v", r.Name, err),
				Fix:     "check that this server can reach a DNS resolver, then check again",
			}
		}
		return findings
	}
	var wg sync.WaitGroup
	for i, r := range records {
		wg.Go(func() { findings[i] = check(ctx, srvs, r) })
	}
	wg.Wait()
	return findings
}

// check looks one record up and compares it.
func check(ctx context.Context, srvs []string, want Record) Finding {
	f := Finding{Record: want}
	if !strings.EqualFold(want.Type, "TXT") {
		f.Problem = fmt.Sprintf("moat checks only TXT records, not the %s record at %s", want.Type, want.Name)
		f.Fix = "check it with your DNS provider"
		return f
	}
	found, err := lookupTXT(ctx, srvs, want.Name)
	if err != nil {
		f.Problem = fmt.Sprintf("the lookup of TXT %s failed: %v", want.Name, err)
		f.Fix = "check again in a few minutes; if it keeps failing, ask your DNS provider why its name servers do not answer for " + want.Name
		return f
	}
	f.Found = found
	switch {
	case isDKIM(want.Value):
		f.Problem, f.Fix = checkDKIM(want, found)
	case isSPF(want.Value):
		f.Problem, f.Fix = checkSPF(want, found)
	case isDMARC(want.Value):
		f.Problem, f.Fix = checkDMARC(want, found)
	default:
		f.Problem, f.Fix = checkExact(want, found)
	}
	f.OK = f.Problem == ""
	return f
}

// lookupTXT returns the TXT values at name, the strings of each record
// joined; none for NXDOMAIN.
func lookupTXT(ctx context.Context, srvs []string, name string) ([]string, error) {
	r, err := query(ctx, srvs, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var vals []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			vals = append(vals, strings.Join(txt.Txt, ""))
		}
	}
	return vals, nil
}

// checkDKIM compares a DKIM key record. Receivers take the one TXT record
// at the name as the key, so anything else there is a problem too.
func checkDKIM(want Record, found []string) (problem, fix string) {
	publish := zoneTXT(want.Name, want.Value)
	switch len(found) {
	case 0:
		return "no TXT record at " + want.Name, "publish " + publish
	case 1:
	default:
		return fmt.Sprintf("%s TXT records at %s: receivers cannot tell which is the DKIM key", count(len(found)), want.Name),
			"keep only one TXT record there: " + publish
	}
	wantTags, _ := parseTags(want.Value)
	got, order := parseTags(found[0])
	if v, ok := got["v"]; ok && v != "DKIM1" {
		return "the TXT record at " + want.Name + " is not a DKIM key (v=" + v + ")", "replace it with " + publish
	} else if ok && order[0] != "v" {
		return "the DKIM key at " + want.Name + " does not start with v=DKIM1, so receivers may reject it", "replace it with " + publish
	}
	p, ok := got["p"]
	if !ok {
		return "the TXT record at " + want.Name + " is not a DKIM key (no p=)", "replace it with " + publish
	}
	if p == "" {
		return "the DKIM key at " + want.Name + " is revoked (empty p=)", "replace it with " + publish
	}
	gotK, wantK := keyType(got), keyType(wantTags)
	if gotK != wantK {
		return fmt.Sprintf("the DKIM key published at %s is not moat's (k=%s, moat's is k=%s)", want.Name, gotK, wantK), "replace it with " + publish
	}
	if p != wantTags["p"] {
		return "the DKIM key published at " + want.Name + " is not moat's (p= differs)", "replace it with " + publish
	}
	return "", ""
}

// keyType is a DKIM key record's k=, which defaults to rsa.
func keyType(tags map[string]string) string {
	if k := tags["k"]; k != "" {
		return k
	}
	return "rsa"
}

// checkSPF compares an SPF record. More than one makes SPF fail with a
// permanent error (RFC 7208 section 4.5), so that is a problem even when
// one of them is right.
func checkSPF(want Record, found []string) (problem, fix string) {
	var spfs []string
	for _, v := range found {
		if isSPF(v) {
			spfs = append(spfs, v)
		}
	}
	wantTerms := spfTerms(want.Value)
	switch len(spfs) {
	case 0:
		return "no SPF record at " + want.Name, "publish " + zoneTXT(want.Name, want.Value)
	case 1:
	default:
		merged := mergeSPF(wantTerms, spfs...)
		return fmt.Sprintf("%s SPF records at %s: receivers treat that as an error", count(len(spfs)), want.Name),
			"merge them into one: " + zoneTXT(want.Name, merged)
	}
	got := spfTerms(spfs[0])
	// What is wrong with the one record, as phrases of one sentence.
	var wrong []string
	var missing []string
	for _, w := range wantTerms {
		if isSPFAll(w) || isSPFModifier(w) {
			continue
		}
		if !spfCovers(got, w, want.Name) {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		wrong = append(wrong, "does not authorise "+strings.Join(missing, " and "))
	}
	const lax = "so receivers are not told to distrust mail from other servers"
	switch all := spfAll(got); all {
	case "-all", "~all":
	case "":
		wrong = append(wrong, "does not end in -all or ~all, "+lax)
	default:
		wrong = append(wrong, "ends in "+all+", "+lax)
	}
	if len(wrong) == 0 {
		return "", ""
	}
	return "the SPF record at " + want.Name + " " + strings.Join(wrong, ", and "), "change it to " + zoneTXT(want.Name, mergeSPF(wantTerms, spfs[0]))
}

// spfTerms returns the terms of an SPF record after "v=spf1".
func spfTerms(value string) []string {
	f := strings.Fields(value)
	if len(f) > 0 && strings.EqualFold(f[0], "v=spf1") {
		f = f[1:]
	}
	return f
}

// spfMechanism splits an SPF term into its qualifier ("+" when none is
// written), its lower-cased mechanism name and its argument: the part
// after ":" (with any "/cidr") or, for a bare "a/24", "/24".
func spfMechanism(term string) (qual, name, arg string) {
	qual = "+"
	if term != "" && strings.ContainsRune("+-~?", rune(term[0])) {
		qual, term = term[:1], term[1:]
	}
	if i := strings.IndexAny(term, ":/"); i >= 0 {
		name, arg = term[:i], term[i:]
		arg = strings.TrimPrefix(arg, ":")
	} else {
		name = term
	}
	return qual, strings.ToLower(name), arg
}

// isSPFModifier reports whether term is a modifier (name=value, like
// redirect=) rather than a mechanism.
func isSPFModifier(term string) bool {
	i := strings.IndexAny(term, ":/=")
	return i >= 0 && term[i] == '='
}

// isSPFAll reports whether term is an "all" mechanism.
func isSPFAll(term string) bool {
	_, name, _ := spfMechanism(term)
	return name == "all" && !isSPFModifier(term)
}

// spfAll returns the record's all mechanism if it is its last mechanism,
// as written ("-all"), or "" when the record does not end in one.
// Modifiers may follow it.
func spfAll(terms []string) string {
	for i := len(terms) - 1; i >= 0; i-- {
		if isSPFModifier(terms[i]) {
			continue
		}
		if !isSPFAll(terms[i]) {
			return ""
		}
		qual, _, _ := spfMechanism(terms[i])
		return qual + "all"
	}
	return ""
}

// spfCovers reports whether one of the got terms authorises what the
// wanted mechanism w does: an ip4: or ip6: range that holds w's addresses,
// the same include: domain, or an a (or mx) for the same domain, each
// with a pass qualifier. domain is the record's name, which a bare a
// means.
func spfCovers(got []string, w, domain string) bool {
	_, wname, warg := spfMechanism(w)
	wantPrefix, wantIsIP := spfPrefix(wname, warg)
	for _, g := range got {
		qual, name, arg := spfMechanism(g)
		if qual != "+" || isSPFModifier(g) {
			continue
		}
		switch {
		case wantIsIP:
			if p, ok := spfPrefix(name, arg); ok && p.Bits() <= wantPrefix.Bits() && p.Contains(wantPrefix.Addr()) {
				return true
			}
		case name != wname:
			// Another kind of mechanism: no match.
		case wname == "include":
			if strings.EqualFold(strings.TrimSuffix(arg, "."), strings.TrimSuffix(warg, ".")) {
				return true
			}
		case wname == "a" || wname == "mx":
			if sameSPFDomain(arg, warg, domain) {
				return true
			}
		default:
			if strings.EqualFold(g, w) {
				return true
			}
		}
	}
	return false
}

// spfPrefix parses the argument of an ip4: or ip6: mechanism.
func spfPrefix(name, arg string) (netip.Prefix, bool) {
	if name != "ip4" && name != "ip6" {
		return netip.Prefix{}, false
	}
	if p, err := netip.ParsePrefix(arg); err == nil {
		return p.Masked(), (name == "ip4") == p.Addr().Is4()
	}
	a, err := netip.ParseAddr(arg)
	if err != nil || (name == "ip4") != a.Is4() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// sameSPFDomain reports whether the arguments of two a or mx mechanisms
// name the same domain, an empty one (or one that is only a /cidr)
// meaning domain.
func sameSPFDomain(a, b, domain string) bool {
	norm := func(s string) string {
		if i := strings.IndexByte(s, '/'); i >= 0 {
			s = s[:i]
		}
		if s == "" {
			s = domain
		}
		return strings.ToLower(strings.TrimSuffix(s, "."))
	}
	return norm(a) == norm(b)
}

// mergeSPF returns one SPF record that keeps what the existing records
// authorise and adds what the wanted terms need, so that following the
// fix does not cut off another sender the owner uses. It ends in the
// existing records' -all or ~all if they have one, else in the wanted one.
func mergeSPF(want []string, existing ...string) string {
	terms := []string{"v=spf1"}
	var mods []string
	all := ""
	seen := make(map[string]bool)
	add := func(t string) {
		if k := strings.ToLower(t); !seen[k] {
			seen[k] = true
			terms = append(terms, t)
		}
	}
	for _, rec := range existing {
		got := spfTerms(rec)
		// The strictest of the records' endings wins.
		if a := spfAll(got); a == "-all" || (a == "~all" && all == "") {
			all = a
		}
		for _, t := range got {
			switch {
			case isSPFAll(t):
			case isSPFModifier(t):
				mods = append(mods, t)
			default:
				add(t)
			}
		}
	}
	for _, w := range want {
		switch {
		case isSPFAll(w):
			if all == "" {
				all = w
			}
		case isSPFModifier(w):
		case !spfCovers(terms, w, ""):
			add(w)
		}
	}
	// A redirect= is ignored once the record has an all, so it goes.
	for _, m := range mods {
		if !strings.HasPrefix(strings.ToLower(m), "redirect=") {
			terms = append(terms, m)
		}
	}
	if all == "" {
		all = "-all"
	}
	return strings.Join(append(terms, all), " ")
}

// checkDMARC compares a DMARC record. Receivers skip DMARC for a domain
// with more than one (RFC 7489 section 6.6.3), so that is a problem.
func checkDMARC(want Record, found []string) (problem, fix string) {
	var dmarcs []string
	for _, v := range found {
		if isDMARC(v) {
			dmarcs = append(dmarcs, v)
		}
	}
	switch len(dmarcs) {
	case 0:
		return "no DMARC record at " + want.Name, "publish " + zoneTXT(want.Name, want.Value)
	case 1:
	default:
		return fmt.Sprintf("%s DMARC records at %s: receivers ignore them all", count(len(dmarcs)), want.Name),
			"keep only one: " + zoneTXT(want.Name, want.Value)
	}
	tags, order := parseTags(dmarcs[0])
	switch p, ok := tags["p"]; {
	case p == "quarantine" || p == "reject":
		return "", ""
	case !ok:
		return "the DMARC record at " + want.Name + " has no p=, so receivers do nothing about mail that fails the checks",
			"add p=quarantine: " + zoneTXT(want.Name, setTag(order, tags, "p", "quarantine"))
	case p == "none":
		return "the DMARC record at " + want.Name + " has p=none, so receivers deliver mail that fails the checks as if it passed",
			"change p=none to p=quarantine: " + zoneTXT(want.Name, setTag(order, tags, "p", "quarantine"))
	default:
		return "the DMARC record at " + want.Name + " has p=" + p + ", which receivers do not understand",
			"change it to p=quarantine: " + zoneTXT(want.Name, setTag(order, tags, "p", "quarantine"))
	}
}

// setTag returns a tag list with tag set to value, keeping the other
// tags (like the owner's own rua=) and their order. A new tag goes
// right after v=, where DMARC wants p=.
func setTag(order []string, tags map[string]string, tag, value string) string {
	var parts []string
	set := false
	for _, name := range order {
		v := tags[name]
		if name == tag {
			v, set = value, true
		}
		parts = append(parts, name+"="+v)
		if name == "v" && !set {
			if _, ok := tags[tag]; !ok {
				parts = append(parts, tag+"="+value)
				set = true
			}
		}
	}
	if !set {
		parts = append(parts, tag+"="+value)
	}
	return strings.Join(parts, "; ")
}

// checkExact compares a record moat does not know the meaning of:
// one of the values at the name must be it, spaces aside.
func checkExact(want Record, found []string) (problem, fix string) {
	w := strings.Join(strings.Fields(want.Value), " ")
	for _, v := range found {
		if strings.Join(strings.Fields(v), " ") == w {
			return "", ""
		}
	}
	if len(found) == 0 {
		return "no TXT record at " + want.Name, "publish " + zoneTXT(want.Name, want.Value)
	}
	return "the TXT records at " + want.Name + " do not include moat's", "publish " + zoneTXT(want.Name, want.Value)
}

// parseTags parses a DKIM or DMARC tag list ("v=DKIM1; k=rsa; p=...")
// into tags by name and the names in order. Spaces around tags are
// dropped, and so are spaces inside p=, where base64 may be folded.
// The first of repeated tags wins.
func parseTags(value string) (map[string]string, []string) {
	tags := make(map[string]string)
	var order []string
	for part := range strings.SplitSeq(value, ";") {
		name, v, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			continue
		}
		if _, dup := tags[name]; dup {
			continue
		}
		v = strings.TrimSpace(v)
		if name == "p" {
			v = strings.Join(strings.Fields(v), "")
		}
		tags[name] = v
		order = append(order, name)
	}
	return tags, order
}

// isDKIM reports whether a TXT value is a DKIM key record: one that says
// v=DKIM1 first, or has no v= but a p=, which RFC 6376 also allows.
func isDKIM(value string) bool {
	tags, order := parseTags(value)
	if len(order) == 0 {
		return false
	}
	if order[0] == "v" {
		return tags["v"] == "DKIM1"
	}
	_, hasV := tags["v"]
	_, hasP := tags["p"]
	return !hasV && hasP
}

// isSPF reports whether a TXT value is an SPF record: its first word is
// v=spf1 (RFC 7208 section 4.5).
func isSPF(value string) bool {
	first, _, _ := strings.Cut(value, " ")
	return strings.EqualFold(first, "v=spf1")
}

// isDMARC reports whether a TXT value is a DMARC record: its first tag is
// exactly v=DMARC1 (RFC 7489 section 6.3).
func isDMARC(value string) bool {
	tags, order := parseTags(value)
	return len(order) > 0 && order[0] == "v" && tags["v"] == "DMARC1"
}

// count spells a small number out, for problems a person reads.
func count(n int) string {
	words := [...]string{"no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
	if n >= 0 && n < len(words) {
		return words[n]
	}
	return strconv.Itoa(n)
}
