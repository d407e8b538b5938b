// Command tlogcheck checks Custodia's log artifacts with Go's golang.org/x/mod/sumdb/note and
// golang.org/x/mod/sumdb/tlog, an implementation written independently of ours. Everything Custodia-specific
// here (checkpoint body, tlog-proof file, entry bundles) is parsed from the C2SP specs, not from our Rust code.
//
// Usage:
//
//	tlogcheck note <vkey> <checkpoint-file>
//	tlogcheck inclusion <vkey> <checkpoint-file> <index> <entry-file> <proof-file>
//	tlogcheck consistency <vkey> <old-checkpoint> <new-checkpoint> <proof-file>
//	tlogcheck tlogproof <vkey> <tlog-proof-file> <entry-file>
//	tlogcheck treehash <vkey> <checkpoint-file> <log-dir>
//	tlogcheck sign <signer-key-file> <body-file>
//
// Proof files hold one base64 hash per line. On success a command prints what it checked and exits 0; on
// failure it prints the reason to stderr and exits 1 (2 for a usage error).
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tileWidth is the number of entries in a full c2sp.org/tlog-tiles entry bundle.
const tileWidth = 256

type command struct {
	args string
	run  func(args []string) error
}

var commands = map[string]command{
	"note":        {"<vkey> <checkpoint-file>", cmdNote},
	"inclusion":   {"<vkey> <checkpoint-file> <index> <entry-file> <proof-file>", cmdInclusion},
	"consistency": {"<vkey> <old-checkpoint> <new-checkpoint> <proof-file>", cmdConsistency},
	"tlogproof":   {"<vkey> <tlog-proof-file> <entry-file>", cmdTlogProof},
	"treehash":    {"<vkey> <checkpoint-file> <log-dir>", cmdTreeHash},
	"sign":        {"<signer-key-file> <body-file>", cmdSign},
}

func main() {
	if len(os.Args) < 2 {
		usage("no command")
	}
	name := os.Args[1]
	cmd, ok := commands[name]
	if !ok {
		usage("unknown command " + strconv.Quote(name))
	}
	args := os.Args[2:]
	if want := len(strings.Fields(cmd.args)); len(args) != want {
		usage(fmt.Sprintf("%s takes %d arguments: %s", name, want, cmd.args))
	}
	if err := cmd.run(args); err != nil {
		fmt.Fprintf(os.Stderr, "tlogcheck %s: %v\n", name, err)
		os.Exit(1)
	}
}

func usage(problem string) {
	fmt.Fprintf(os.Stderr, "tlogcheck: %s\nusage:\n", problem)
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(os.Stderr, "  tlogcheck %s %s\n", name, commands[name].args)
	}
	os.Exit(2)
}

// checkpoint is the body of a c2sp.org/tlog-checkpoint.
type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

func (c checkpoint) String() string {
	return fmt.Sprintf("%d %s", c.size, c.root)
}

// openCheckpoint verifies a signed note with vkey and parses its body. The spec also requires the checkpoint's
// origin to be the signing key's name, which note.Open alone does not check.
func openCheckpoint(vkey string, msg []byte) (checkpoint, error) {
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return checkpoint{}, fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return checkpoint{}, fmt.Errorf("signed note: %w", err)
	}
	c, err := parseCheckpointBody(n.Text)
	if err != nil {
		return checkpoint{}, err
	}
	if c.origin != verifier.Name() {
		return checkpoint{}, fmt.Errorf("checkpoint origin %q is not the key name %q", c.origin, verifier.Name())
	}
	return c, nil
}

func openCheckpointFile(vkey, path string) (checkpoint, error) {
	msg, err := os.ReadFile(path)
	if err != nil {
		return checkpoint{}, err
	}
	c, err := openCheckpoint(vkey, msg)
	if err != nil {
		return checkpoint{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// parseCheckpointBody reads "<origin>\n<size>\n<base64 root>\n" followed by optional extension lines.
func parseCheckpointBody(text string) (checkpoint, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 || lines[0] == "" {
		return checkpoint{}, errors.New("checkpoint body needs an origin, a size and a root")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return checkpoint{}, fmt.Errorf("checkpoint size %q is not a canonical decimal", lines[1])
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint root %q: %w", lines[2], err)
	}
	return checkpoint{origin: lines[0], size: size, root: root}, nil
}

func parseIndex(text string) (int64, error) {
	index, err := strconv.ParseInt(text, 10, 64)
	if err != nil || index < 0 {
		return 0, fmt.Errorf("index %q is not a non-negative decimal", text)
	}
	return index, nil
}

func parseHashLines(lines []string) ([]tlog.Hash, error) {
	hashes := make([]tlog.Hash, 0, len(lines))
	for i, line := range lines {
		h, err := tlog.ParseHash(line)
		if err != nil {
			return nil, fmt.Errorf("proof hash %d: %w", i, err)
		}
		hashes = append(hashes, h)
	}
	return hashes, nil
}

func readProofFile(path string) ([]tlog.Hash, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	text := strings.TrimSuffix(string(data), "\n")
	if text == "" {
		return nil, nil
	}
	return parseHashLines(strings.Split(text, "\n"))
}

func cmdNote(args []string) error {
	c, err := openCheckpointFile(args[0], args[1])
	if err != nil {
		return err
	}
	fmt.Println(c)
	return nil
}

func checkInclusion(c checkpoint, index int64, entry []byte, proof []tlog.Hash) error {
	if index >= c.size {
		return fmt.Errorf("index %d is outside the tree of size %d", index, c.size)
	}
	if err := tlog.CheckRecord(proof, c.size, c.root, index, tlog.RecordHash(entry)); err != nil {
		return fmt.Errorf("entry %d in tree of size %d: %w", index, c.size, err)
	}
	fmt.Printf("%d %s\n", index, c)
	return nil
}

func cmdInclusion(args []string) error {
	c, err := openCheckpointFile(args[0], args[1])
	if err != nil {
		return err
	}
	index, err := parseIndex(args[2])
	if err != nil {
		return err
	}
	entry, err := os.ReadFile(args[3])
	if err != nil {
		return err
	}
	proof, err := readProofFile(args[4])
	if err != nil {
		return err
	}
	return checkInclusion(c, index, entry, proof)
}

func cmdConsistency(args []string) error {
	old, err := openCheckpointFile(args[0], args[1])
	if err != nil {
		return err
	}
	latest, err := openCheckpointFile(args[0], args[2])
	if err != nil {
		return err
	}
	proof, err := readProofFile(args[3])
	if err != nil {
		return err
	}
	if err := tlog.CheckTree(proof, latest.size, latest.root, old.size, old.root); err != nil {
		return fmt.Errorf("tree of size %d to tree of size %d: %w", old.size, latest.size, err)
	}
	fmt.Printf("%s -> %s\n", old, latest)
	return nil
}

// splitLine returns the text before the first newline and the rest after it.
func splitLine(data []byte) (string, []byte, error) {
	end := bytes.IndexByte(data, '\n')
	if end < 0 {
		return "", nil, errors.New("tlog-proof file ends inside a line")
	}
	return string(data[:end]), data[end+1:], nil
}

// parseTlogProof reads a c2sp.org/tlog-proof@v1 file: the header, an optional "extra <base64>" line,
// "index <N>", the proof hashes one per line, a blank line, then the signed checkpoint verbatim.
func parseTlogProof(data []byte) (int64, []tlog.Hash, []byte, error) {
	line, rest, err := splitLine(data)
	if err != nil {
		return 0, nil, nil, err
	}
	if line != "c2sp.org/tlog-proof@v1" {
		return 0, nil, nil, fmt.Errorf("header %q is not c2sp.org/tlog-proof@v1", line)
	}
	if line, rest, err = splitLine(rest); err != nil {
		return 0, nil, nil, err
	}
	if strings.HasPrefix(line, "extra ") {
		if _, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(line, "extra ")); err != nil {
			return 0, nil, nil, fmt.Errorf("extra data: %w", err)
		}
		if line, rest, err = splitLine(rest); err != nil {
			return 0, nil, nil, err
		}
	}
	if !strings.HasPrefix(line, "index ") {
		return 0, nil, nil, fmt.Errorf("expected an index line, found %q", line)
	}
	index, err := parseIndex(strings.TrimPrefix(line, "index "))
	if err != nil {
		return 0, nil, nil, err
	}
	var hashLines []string
	for {
		if line, rest, err = splitLine(rest); err != nil {
			return 0, nil, nil, err
		}
		if line == "" {
			break
		}
		hashLines = append(hashLines, line)
	}
	proof, err := parseHashLines(hashLines)
	return index, proof, rest, err
}

func cmdTlogProof(args []string) error {
	data, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	index, proof, msg, err := parseTlogProof(data)
	if err != nil {
		return fmt.Errorf("%s: %w", args[1], err)
	}
	c, err := openCheckpoint(args[0], msg)
	if err != nil {
		return fmt.Errorf("%s: checkpoint: %w", args[1], err)
	}
	entry, err := os.ReadFile(args[2])
	if err != nil {
		return err
	}
	return checkInclusion(c, index, entry, proof)
}

// tilePath writes n as 3-digit groups, all but the last prefixed with 'x': 1234067 is x001/x234/067.
func tilePath(n int64) string {
	path := fmt.Sprintf("%03d", n%1000)
	for n /= 1000; n > 0; n /= 1000 {
		path = fmt.Sprintf("x%03d/%s", n%1000, path)
	}
	return path
}

// readBundle reads entry bundle n of a tree of the given size from a local tlog-tiles directory. A superseded
// partial bundle may be gone; then, as c2sp.org/tlog-tiles lets clients do, the full bundle serves instead.
func readBundle(dir string, n, size int64) ([][]byte, error) {
	width := size - n*tileWidth
	if width > tileWidth {
		width = tileWidth
	}
	path := filepath.Join(dir, "tile", "entries", filepath.FromSlash(tilePath(n)))
	stored := width
	if width < tileWidth {
		path = fmt.Sprintf("%s.p/%d", path, width)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && width < tileWidth {
		path, stored = strings.TrimSuffix(path, fmt.Sprintf(".p/%d", width)), tileWidth
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	entries, err := parseBundle(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(entries)) != stored {
		return nil, fmt.Errorf("%s: holds %d entries, not %d", path, len(entries), stored)
	}
	return entries[:width], nil
}

// parseBundle splits an entry bundle: each entry is a big-endian uint16 length and that many bytes.
func parseBundle(data []byte) ([][]byte, error) {
	var entries [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, fmt.Errorf("truncated length of entry %d", len(entries))
		}
		n := int(binary.BigEndian.Uint16(data))
		if len(data)-2 < n {
			return nil, fmt.Errorf("entry %d is truncated: %d of %d bytes", len(entries), len(data)-2, n)
		}
		entries = append(entries, data[2:2+n])
		data = data[2+n:]
	}
	return entries, nil
}

func cmdTreeHash(args []string) error {
	c, err := openCheckpointFile(args[0], args[1])
	if err != nil {
		return err
	}
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		hashes := make([]tlog.Hash, len(indexes))
		for i, index := range indexes {
			if index >= int64(len(stored)) {
				return nil, fmt.Errorf("stored hash %d not computed yet", index)
			}
			hashes[i] = stored[index]
		}
		return hashes, nil
	})
	for n := int64(0); n*tileWidth < c.size; n++ {
		entries, err := readBundle(args[2], n, c.size)
		if err != nil {
			return err
		}
		for i, entry := range entries {
			hashes, err := tlog.StoredHashes(n*tileWidth+int64(i), entry, reader)
			if err != nil {
				return err
			}
			stored = append(stored, hashes...)
		}
	}
	root, err := tlog.TreeHash(c.size, reader)
	if err != nil {
		return err
	}
	if c.size == 0 {
		// sumdb defines the empty tree's hash as zero; RFC 6962, and so C2SP, as SHA-256 of nothing.
		root = sha256.Sum256(nil)
	}
	if root != c.root {
		return fmt.Errorf("entries in %s hash to root %s, but the checkpoint says %s", args[2], root, c.root)
	}
	fmt.Println(c)
	return nil
}

// cmdSign signs a checkpoint body with a Go note signer key and prints the signed note. Ed25519 signatures are
// deterministic, so the bytes must equal the note that Custodia signed with the same key.
func cmdSign(args []string) error {
	skey, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return fmt.Errorf("signer key: %w", err)
	}
	body, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	msg, err := note.Sign(&note.Note{Text: string(body)}, signer)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(msg)
	return err
}
