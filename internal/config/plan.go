package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Op is what a plan does to one object.
type Op string

// The operations of a plan.
const (
	Add    Op = "add"
	Change Op = "change"
	Remove Op = "remove"
)

// Step is one object's change: the server settings or one app.
type Step struct {
	Op Op `json:"op"`
	// Object is "server", "firewall" or "app NAME".
	Object string `json:"object"`
	// Fields lists what differs, as "field: old -> new".
	Fields []string `json:"fields,omitempty"`
	// Before and After are the object as JSON (empty for add / remove).
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
}

// Plan is what applying a state would change, object by object.
type Plan []Step

// Diff returns the plan that turns from into to. Both must be normalized.
func Diff(from, to State) Plan {
	var p Plan
	if f := diffFields(flatten(from.Server), flatten(to.Server)); len(f) > 0 {
		p = append(p, Step{Op: Change, Object: "server", Fields: f, Before: mustJSON(from.Server), After: mustJSON(to.Server)})
	}
	if f := diffFields(flatten(from.Firewall), flatten(to.Firewall)); len(f) > 0 {
		p = append(p, Step{Op: Change, Object: "firewall", Fields: f, Before: mustJSON(from.Firewall), After: mustJSON(to.Firewall)})
	}
	if f := diffFields(flatten(from.SSH), flatten(to.SSH)); len(f) > 0 {
		p = append(p, Step{Op: Change, Object: "ssh", Fields: f, Before: mustJSON(from.SSH), After: mustJSON(to.SSH)})
	}
	if f := diffFields(flatten(from.Guard), flatten(to.Guard)); len(f) > 0 {
		p = append(p, Step{Op: Change, Object: "guard", Fields: f, Before: mustJSON(from.Guard), After: mustJSON(to.Guard)})
	}
	if st, ok := mailStep(from.Mail, to.Mail); ok {
		p = append(p, st)
	}
	if f := diffFields(flatten(from.Auth), flatten(to.Auth)); len(f) > 0 {
		p = append(p, Step{Op: Change, Object: "auth", Fields: f, Before: mustJSON(from.Auth), After: mustJSON(to.Auth)})
	}
	if f := diffFields(flatten(from.Backup), flatten(to.Backup)); len(f) > 0 {
		p = append(p, Step{Op: Change, Object: "backup", Fields: f, Before: mustJSON(from.Backup), After: mustJSON(to.Backup)})
	}
	old := map[string]App{}
	for _, a := range from.Apps {
		old[a.Name] = a
	}
	seen := map[string]bool{}
	for _, a := range to.Apps {
		seen[a.Name] = true
		o, ok := old[a.Name]
		if !ok {
			p = append(p, Step{Op: Add, Object: "app " + a.Name, Fields: diffFields(nil, flatten(a)), After: mustJSON(a)})
			continue
		}
		if f := diffFields(flatten(o), flatten(a)); len(f) > 0 {
			p = append(p, Step{Op: Change, Object: "app " + a.Name, Fields: f, Before: mustJSON(o), After: mustJSON(a)})
		}
	}
	for _, a := range from.Apps {
		if !seen[a.Name] {
			p = append(p, Step{Op: Remove, Object: "app " + a.Name, Before: mustJSON(a)})
		}
	}
	return p
}

// String renders the plan for a person, one object a line block.
func (p Plan) String() string {
	if len(p) == 0 {
		return "No changes: the desired state is already as written.\n"
	}
	var b strings.Builder
	sign := map[Op]string{Add: "+", Change: "~", Remove: "-"}
	for _, s := range p {
		fmt.Fprintf(&b, "%s %s %s\n", sign[s.Op], s.Op, s.Object)
		for _, f := range s.Fields {
			fmt.Fprintf(&b, "    %s\n", f)
		}
	}
	fmt.Fprintf(&b, "Plan: %d to add, %d to change, %d to remove.\n", p.count(Add), p.count(Change), p.count(Remove))
	return b.String()
}

func (p Plan) count(op Op) int {
	n := 0
	for _, s := range p {
		if s.Op == op {
			n++
		}
	}
	return n
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("config: marshal %T: %v", v, err)) // plain data: cannot fail
	}
	return b
}

// flatten turns a value into "path: value" leaves, through its JSON form.
func flatten(v any) map[string]string {
	// Numbers stay as JSON writes them (1000000, not 1e+06).
	var tree any
	d := json.NewDecoder(bytes.NewReader(mustJSON(v)))
	d.UseNumber()
	if err := d.Decode(&tree); err != nil {
		panic(fmt.Sprintf("config: flatten %T: %v", v, err))
	}
	out := map[string]string{}
	var walk func(prefix string, t any)
	walk = func(prefix string, t any) {
		switch t := t.(type) {
		case map[string]any:
			for k, v := range t {
				walk(join(prefix, k), v)
			}
		case []any:
			parts := make([]string, len(t))
			for i, v := range t {
				parts[i] = leaf(v)
			}
			out[prefix] = strings.Join(parts, ", ")
		case string:
			// An empty value is a setting (an empty header value removes
			// the header), so it must differ from an absent one.
			if t == "" {
				t = `""`
			}
			out[prefix] = t
		default:
			out[prefix] = leaf(t)
		}
	}
	walk("", tree)
	return out
}

// leaf is one value as a user writes it: a number or string as it is,
// anything nested as compact JSON.
func leaf(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool, nil:
		return fmt.Sprint(v)
	}
	return string(mustJSON(v))
}

func diffFields(from, to map[string]string) []string {
	keys := map[string]bool{}
	for k := range from {
		keys[k] = true
	}
	for k := range to {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		o, n := from[k], to[k]
		switch {
		case o == n:
		case o == "":
			out = append(out, fmt.Sprintf("%s: %s", k, n))
		case n == "":
			out = append(out, fmt.Sprintf("%s: %s -> (unset)", k, o))
		default:
			out = append(out, fmt.Sprintf("%s: %s -> %s", k, o, n))
		}
	}
	sort.Strings(out)
	return out
}
