package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Parse reads a moat.yaml. Unknown keys are refused with their path and
// the keys that are known there, because a misspelt key silently ignored
// is a setting the user believes is on. The result is normalized and
// validated.
func Parse(data []byte) (State, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return State{}, fmt.Errorf("moat.yaml: %w: fix the YAML syntax", err)
	}
	var s State
	if root.Kind == 0 { // empty document
		return s, nil
	}
	if err := checkKeys(&root, reflect.TypeOf(s), ""); err != nil {
		return State{}, err
	}
	if err := root.Decode(&s); err != nil {
		return State{}, fmt.Errorf("moat.yaml: %w", err)
	}
	// Validate before sorting the apps, so errors say apps[i] as in the file.
	s.normalizeValues()
	if err := s.Validate(); err != nil {
		return State{}, err
	}
	s.sortApps()
	return s, nil
}

// Marshal writes the state as moat.yaml; Parse(Marshal(s)) gives s back.
func Marshal(s State) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# moat desired state: edit and apply with `moat apply -f FILE`\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(s); err != nil {
		return nil, fmt.Errorf("encode moat.yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode moat.yaml: %w", err)
	}
	return buf.Bytes(), nil
}

// checkKeys walks the YAML tree beside the Go type and refuses keys the
// type does not have.
func checkKeys(n *yaml.Node, t reflect.Type, path string) error {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			if err := checkKeys(c, t, path); err != nil {
				return err
			}
		}
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // Decode reports the type mismatch
		}
		fields := yamlFields(t)
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				errs = append(errs, &FieldError{
					Field:   join(path, k.Value),
					Value:   k.Value,
					Problem: fmt.Sprintf("is not a known key (line %d)", k.Line),
					Fix:     fmt.Sprintf("remove it or correct its spelling; known keys here: %s", strings.Join(sortedNames(fields), ", ")),
				})
				continue
			}
			if err := checkKeys(v, ft, join(path, k.Value)); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		var errs []error
		for i, c := range n.Content {
			if err := checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	return nil
}

func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

func sortedNames(m map[string]reflect.Type) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
