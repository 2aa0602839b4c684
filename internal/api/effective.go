package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"moat/internal/config"
	"moat/internal/firewall"
)

// EffectiveConfig is what moat runs with, as text, for the owner to read
// (GET /v1/config): the edge's settings, the firewall's ruleset as moat
// renders it for nft, and sshd's effective configuration.
type EffectiveConfig struct {
	// Edge is the server and the apps as moat.yaml, secrets left out.
	Edge string `json:"edge"`
	// Firewall is the nft script that applying the stored rules runs
	// (bans are added to its sets as they come), or why there is none.
	Firewall string `json:"firewall"`
	// SSHD is `sshd -T` as moat reads it, or why it cannot.
	SSHD string `json:"sshd"`
}

func (s *Server) effective(w http.ResponseWriter, r *http.Request) {
	st, _, err := s.Store.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	var out EffectiveConfig
	edge, err := config.Marshal(config.State{Server: st.Server, Apps: st.Apps}.Redacted())
	if err != nil {
		s.fail(w, err)
		return
	}
	out.Edge = string(edge)
	switch rules, err := st.FirewallRules(); {
	case err != nil:
		out.Firewall = "# the stored rules are not valid: " + err.Error() + "\n"
	case st.Firewall.Off:
		out.Firewall = "# the firewall is off: moat's table is not in the kernel (`moat firewall on` puts it back)\n"
	case len(rules) == 0:
		out.Firewall = "# there are no rules yet, so moat puts no table in the kernel: add one, like `moat firewall allow 22/tcp`\n"
	default:
		out.Firewall = firewall.Render(rules, nil)
	}
	out.SSHD = s.sshdText(r)
	writeJSON(w, http.StatusOK, out)
}

// sshdText is sshd's effective configuration for root, one keyword a
// line, sorted.
func (s *Server) sshdText(r *http.Request) string {
	sh := s.ssh()
	if sh == nil {
		return "# moat does not manage sshd here\n"
	}
	eff, err := sh.Effective(r.Context(), "root")
	if err != nil {
		return "# sshd's configuration could not be read: " + err.Error() + "\n"
	}
	keys := make([]string, 0, len(eff))
	for k := range eff {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, v := range eff[k] {
			fmt.Fprintf(&b, "%s %s\n", k, v)
		}
	}
	return b.String()
}
