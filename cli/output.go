package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// Emit writes v to the command's stdout as JSON or YAML, or, for -o table,
// calls table with an aligned-column writer.
func (g *Globals) Emit(cmd *cobra.Command, v any, table func(w io.Writer)) error {
	return emit(cmd.OutOrStdout(), g.Output, v, table)
}

// EmitList is Emit for a list of n items: in table mode an empty list
// prints the line none (e.g. "no networks") instead of a lone header;
// JSON and YAML print the empty list itself ([]).
func (g *Globals) EmitList(cmd *cobra.Command, v any, n int, none string, table func(w io.Writer)) error {
	if n == 0 && g.Output == OutputTable {
		_, err := fmt.Fprintln(cmd.OutOrStdout(), none)
		return err
	}
	return g.Emit(cmd, v, table)
}

func emit(out io.Writer, format string, v any, table func(w io.Writer)) error {
	switch format {
	case OutputJSON:
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case OutputYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode yaml: %w", err)
		}
		_, err = out.Write(b)
		return err
	default:
		tw := newTable(out)
		table(tw)
		return tw.Flush()
	}
}

func newTable(out io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
}

// row writes tab-separated cells and a newline; empty cells print as "-".
func row(w io.Writer, cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		s := fmt.Sprint(c)
		if s == "" {
			s = "-"
		}
		parts[i] = s
	}
	fmt.Fprintln(w, strings.Join(parts, "\t"))
}

// Say prints a confirmation line in table mode only, so that -o json and
// -o yaml stay machine-readable.
func (g *Globals) Say(cmd *cobra.Command, format string, args ...any) {
	if g.Output == OutputTable {
		fmt.Fprintf(cmd.OutOrStdout(), format+"\n", args...)
	}
}

// readInput reads a file, or stdin for "-".
func readInput(cmd *cobra.Command, path string) ([]byte, error) {
	if path == "-" {
		b, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// isList reports whether JSON or YAML data holds a list at the top level.
func isList(data []byte) bool {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return false
	}
	return bytes.HasPrefix(bytes.TrimSpace(j), []byte("["))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
