// Package config reads a daemon's configuration file: a YAML mapping whose
// keys are the daemon's flag names and whose values are what the flag would
// take on the command line. romanad and romana-agent read it with
// --config-file; a flag given on the command line wins over the file, and the
// file wins over a flag's default (also a default taken from the
// environment, such as ROMANA_SERVER).
//
//	# /etc/romana/romanad.yaml
//	listen: 0.0.0.0:9600
//	advertise: [romanad.example, 10.0.0.5]   # a list is joined with commas
//	host-cert-validity: 720h
//
// Every error names the file, the line and the key: an unknown key (with
// the nearest flag name when one is close), a value the flag refuses, a
// value that is a mapping or empty, a key given twice.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// FlagName is the flag naming the configuration file.
const FlagName = "config-file"

// AddFlag defines --config-file on fs.
func AddFlag(fs *pflag.FlagSet) {
	fs.String(FlagName, "", "YAML `file` of flag values (keys are flag names without the dashes; the command line overrides it)")
}

// Apply loads the file named by fs's --config-file flag, if it is set, into
// fs (see Load). Call it after the command line was parsed.
func Apply(fs *pflag.FlagSet) error {
	f := fs.Lookup(FlagName)
	if f == nil || f.Value.String() == "" {
		return nil
	}
	return Load(f.Value.String(), fs)
}

// Load reads the YAML file at path and sets each flag it names that was not
// given on the command line (fs.Changed). Values of the common flag types
// (strings, numbers, booleans, durations, slices) are all checked before
// any is set, so a file with a bad one changes nothing.
func Load(path string, fs *pflag.FlagSet) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return Parse(path, data, fs)
}

// Parse is Load for data already read; name is used in errors.
func Parse(name string, data []byte, fs *pflag.FlagSet) error {
	values, err := decode(name, data, fs)
	if err != nil {
		return err
	}
	// Check every value on a scratch copy of each flag first, so that a bad
	// value anywhere leaves fs untouched.
	for _, v := range values {
		if err := check(v); err != nil {
			return err
		}
	}
	for _, v := range values {
		if fs.Changed(v.flag.Name) {
			continue
		}
		if err := set(fs, v); err != nil {
			return fmt.Errorf("%s:%d: key %q: %w", name, v.line, v.key, err)
		}
	}
	return nil
}

var lineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// value is one key of the file.
type value struct {
	file  string
	key   string
	line  int
	flag  *pflag.Flag
	items []string // the scalar, or a sequence's items
	list  bool
}

func decode(name string, data []byte, fs *pflag.FlagSet) ([]value, error) {
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // empty, or comments only
		}
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := lineRE.FindStringSubmatch(msg); m != nil { // "line 3: ..." -> "file:3: ..."
			return nil, fmt.Errorf("%s:%s: %s", name, m[1], m[2])
		}
		return nil, fmt.Errorf("%s: %s", name, msg)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s:%d: more than one YAML document: a config file is one mapping of flag names to values", name, extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: expected a mapping of flag names to values (key: value lines), found %s", name, root.Line, kind(root))
	}
	seen := map[string]int{}
	var out []value
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%s:%d: a key must be a flag name, found %s", name, k.Line, kind(k))
		}
		key := k.Value
		at := fmt.Sprintf("%s:%d: key %q", name, k.Line, key)
		if prev, ok := seen[key]; ok {
			return nil, fmt.Errorf("%s: given twice (first on line %d)", at, prev)
		}
		seen[key] = k.Line
		if key == FlagName {
			return nil, fmt.Errorf("%s: a config file cannot name another one", at)
		}
		f := fs.Lookup(key)
		if f == nil || key == "help" {
			if s := nearest(key, fs); s != "" {
				return nil, fmt.Errorf("%s: unknown (no flag --%s; did you mean %q?)", at, key, s)
			}
			return nil, fmt.Errorf("%s: unknown (no flag --%s)", at, key)
		}
		val := value{file: name, key: key, line: k.Line, flag: f}
		switch {
		case v.Kind == yaml.AliasNode:
			return nil, fmt.Errorf("%s: aliases are not supported", at)
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			return nil, fmt.Errorf("%s: no value (write \"\" for an empty string)", at)
		case v.Kind == yaml.ScalarNode:
			val.items = []string{v.Value}
		case v.Kind == yaml.SequenceNode:
			val.list = true
			for _, it := range v.Content {
				if it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
					return nil, fmt.Errorf("%s:%d: key %q: a list may hold only plain values, found %s", name, it.Line, key, kind(it))
				}
				val.items = append(val.items, it.Value)
			}
		default:
			return nil, fmt.Errorf("%s: expected a value or a list, found %s", at, kind(v))
		}
		out = append(out, val)
	}
	return out, nil
}

func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if n.Tag == "!!null" {
		return "nothing"
	}
	return fmt.Sprintf("the value %q", n.Value)
}

// set applies v to fs. A list replaces a slice flag's value whole; for any
// other flag its items are joined with commas (romanad's comma-separated
// flags such as --advertise and --etcd-endpoints).
func set(fs *pflag.FlagSet, v value) error {
	if sv, ok := v.flag.Value.(pflag.SliceValue); ok && v.list {
		if err := sv.Replace(v.items); err != nil {
			return badValue(v, strings.Join(v.items, ","), err)
		}
		v.flag.Changed = true
		return nil
	}
	s := strings.Join(v.items, ",")
	if err := fs.Set(v.flag.Name, s); err != nil {
		return badValue(v, s, err)
	}
	return nil
}

// check sets v on a fresh value of the flag's type when the flag can make
// one (the common pflag types), so that Parse can refuse a bad file before
// it changes anything.
func check(v value) error {
	fresh := freshValue(v.flag)
	if fresh == nil {
		return nil
	}
	scratch := pflag.NewFlagSet("check", pflag.ContinueOnError)
	scratch.AddFlag(&pflag.Flag{Name: v.flag.Name, Value: fresh})
	if err := set(scratch, value{file: v.file, key: v.key, line: v.line, flag: scratch.Lookup(v.flag.Name), items: v.items, list: v.list}); err != nil {
		return fmt.Errorf("%s:%d: key %q: %w", v.file, v.line, v.key, err)
	}
	return nil
}

func freshValue(f *pflag.Flag) pflag.Value {
	s := pflag.NewFlagSet("fresh", pflag.ContinueOnError)
	switch f.Value.Type() {
	case "string":
		return newValue(s, func() { s.String("x", "", "") })
	case "bool":
		return newValue(s, func() { s.Bool("x", false, "") })
	case "int":
		return newValue(s, func() { s.Int("x", 0, "") })
	case "uint":
		return newValue(s, func() { s.Uint("x", 0, "") })
	case "uint32":
		return newValue(s, func() { s.Uint32("x", 0, "") })
	case "int64":
		return newValue(s, func() { s.Int64("x", 0, "") })
	case "uint64":
		return newValue(s, func() { s.Uint64("x", 0, "") })
	case "float64":
		return newValue(s, func() { s.Float64("x", 0, "") })
	case "duration":
		return newValue(s, func() { s.Duration("x", 0, "") })
	case "stringSlice":
		return newValue(s, func() { s.StringSlice("x", nil, "") })
	case "ipSlice":
		return newValue(s, func() { s.IPSlice("x", nil, "") })
	}
	return nil // a flag type of the program's own: checked when set
}

func newValue(s *pflag.FlagSet, define func()) pflag.Value {
	define()
	return s.Lookup("x").Value
}

// badValue says what the flag takes in the user's terms.
func badValue(v value, s string, err error) error {
	want := map[string]string{
		"bool":     "true or false",
		"int":      "a whole number",
		"int64":    "a whole number",
		"uint":     "a whole number, 0 or more",
		"uint32":   "a whole number, 0 or more",
		"uint64":   "a whole number, 0 or more",
		"float64":  "a number",
		"duration": "a duration such as 500ms, 10s, 5m or 720h",
	}[v.flag.Value.Type()]
	if want != "" {
		return fmt.Errorf("%q is not %s", s, want)
	}
	return fmt.Errorf("%q: %v", s, err)
}

// nearest returns the flag name closest to key (edit distance at most 2),
// "" when none is.
func nearest(key string, fs *pflag.FlagSet) string {
	best, bestD := "", 3
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		if n == FlagName || n == "help" {
			continue
		}
		d := distance(key, n)
		if d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
