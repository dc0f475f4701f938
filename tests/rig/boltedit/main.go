// Command boltedit makes and changes BoltDB files with the real bbolt library, so
// that tests of our own stdlib reader compare against what bbolt itself writes.
//
// Trees travel as JSON with every key and value in hex, so keys holding '/' or
// binary bytes survive:
//
//	{"buckets": {HEXNAME: TREE}, "values": {HEXKEY: HEXVALUE}, "sequence": N}
//
// Usage:
//
//	boltedit dump FILE                       print the tree of FILE
//	boltedit build [-page-size N] FILE SPEC  create FILE from a tree (SPEC "-" = stdin)
//	boltedit apply FILE OPS                  run a list of edits in one transaction
//	boltedit churn [-pause D] [-seed S] FILE N
//	                                         commit N self-consistent changes
//
// apply, build and churn open FILE read-write, so FILE must not be held by another
// bbolt process (containerd holds an exclusive flock on its files: stop it first).
// They give up after lockTimeout instead of waiting for the lock forever.
package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// lockTimeout bounds the wait for the file's flock, so a held file fails fast.
const lockTimeout = 5 * time.Second

// Tree is one bucket in the JSON form shared with bolttool.py.
type Tree struct {
	Buckets  map[string]*Tree  `json:"buckets"`
	Values   map[string]string `json:"values"`
	Sequence uint64            `json:"sequence"`
}

// Op is one edit for apply; Path names the bucket it acts in (empty = top level).
type Op struct {
	Op       string   `json:"op"`
	Path     []string `json:"path"`
	Key      string   `json:"key"`
	Value    string   `json:"value"`
	Sequence uint64   `json:"sequence"`
}

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: boltedit dump|build|apply|churn ARGS (see main.go)"))
	}
	commands := map[string]func([]string) error{
		"dump": cmdDump, "build": cmdBuild, "apply": cmdApply, "churn": cmdChurn,
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fail(fmt.Errorf("unknown command %q: want dump, build, apply or churn", os.Args[1]))
	}
	if err := cmd(os.Args[2:]); err != nil {
		fail(fmt.Errorf("%s: %w", os.Args[1], err))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "boltedit:", err)
	os.Exit(1)
}

// ---- dump

func cmdDump(args []string) error {
	if len(args) != 1 {
		return errors.New("want: dump FILE")
	}
	opts := &bolt.Options{ReadOnly: true, Timeout: lockTimeout}
	db, err := bolt.Open(args[0], 0o600, opts)
	if err != nil {
		return fmt.Errorf("open %q: %w", args[0], err)
	}
	defer db.Close()

	var tree *Tree
	err = db.View(func(tx *bolt.Tx) error {
		// The top level has no Bucket handle; its sequence is not reachable
		// through the API and is always 0.
		tree = dumpCursor(tx.Cursor(), tx.Bucket)
		return nil
	})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(tree)
}

// dumpCursor walks one bucket's keys; open returns the sub-bucket of a key.
func dumpCursor(c *bolt.Cursor, open func([]byte) *bolt.Bucket) *Tree {
	tree := newTree()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		// A nil value marks a sub-bucket; an empty value is a plain key.
		if v != nil {
			tree.Values[hex.EncodeToString(k)] = hex.EncodeToString(v)
			continue
		}
		child := open(k)
		sub := dumpCursor(child.Cursor(), child.Bucket)
		sub.Sequence = child.Sequence()
		tree.Buckets[hex.EncodeToString(k)] = sub
	}
	return tree
}

func newTree() *Tree {
	return &Tree{Buckets: map[string]*Tree{}, Values: map[string]string{}}
}

// ---- build

func cmdBuild(args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	pageSize := fs.Int("page-size", 0, "page size in bytes (0 = the OS page size)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("want: build [-page-size N] FILE SPEC")
	}
	path := fs.Arg(0)

	// Refuse to write over a file: build makes fresh databases only.
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%q exists; build makes a new file, use apply to edit", path)
	}
	var tree Tree
	if err := readJSON(fs.Arg(1), &tree); err != nil {
		return err
	}
	if len(tree.Values) > 0 || tree.Sequence != 0 {
		return errors.New("bbolt holds only buckets at the top level: " +
			"top-level values and sequence must be empty")
	}

	opts := &bolt.Options{Timeout: lockTimeout, PageSize: *pageSize}
	return update(path, opts, func(tx *bolt.Tx) error {
		for name, sub := range tree.Buckets {
			if err := createTree(tx.CreateBucket, name, sub); err != nil {
				return err
			}
		}
		return nil
	})
}

// createTree makes bucket name with create and fills it from tree.
func createTree(create func([]byte) (*bolt.Bucket, error), name string, tree *Tree) error {
	key, err := unhex(name)
	if err != nil {
		return err
	}
	b, err := create(key)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	if err := fillBucket(b, tree); err != nil {
		return fmt.Errorf("in bucket %s: %w", name, err)
	}
	return nil
}

func fillBucket(b *bolt.Bucket, tree *Tree) error {
	for k, v := range tree.Values {
		if err := put(b, k, v); err != nil {
			return err
		}
	}
	for name, sub := range tree.Buckets {
		if err := createTree(b.CreateBucket, name, sub); err != nil {
			return err
		}
	}
	return b.SetSequence(tree.Sequence)
}

// ---- apply

func cmdApply(args []string) error {
	if len(args) != 2 {
		return errors.New("want: apply FILE OPS")
	}
	var ops []Op
	if err := readJSON(args[1], &ops); err != nil {
		return err
	}

	// Refuse to create a file: apply edits an existing database.
	if _, err := os.Stat(args[0]); err != nil {
		return err
	}
	return update(args[0], &bolt.Options{Timeout: lockTimeout}, func(tx *bolt.Tx) error {
		for i, op := range ops {
			if err := applyOp(tx, op); err != nil {
				return fmt.Errorf("op %d (%s %v %s): %w", i, op.Op, op.Path, op.Key, err)
			}
		}
		return nil
	})
}

func applyOp(tx *bolt.Tx, op Op) error {
	key, err := unhex(op.Key)
	if err != nil && op.Op != "set-sequence" {
		return err
	}
	if len(op.Path) == 0 {
		return applyTop(tx, op, key)
	}
	b, err := walk(tx, op.Path)
	if err != nil {
		return err
	}
	switch op.Op {
	case "put":
		return put(b, op.Key, op.Value)
	case "delete":
		return b.Delete(key)
	case "create-bucket":
		_, err := b.CreateBucket(key)
		return err
	case "delete-bucket":
		return b.DeleteBucket(key)
	case "set-sequence":
		return b.SetSequence(op.Sequence)
	}
	return fmt.Errorf("unknown op %q", op.Op)
}

// applyTop runs an op at the top level, where bbolt holds only buckets.
func applyTop(tx *bolt.Tx, op Op, key []byte) error {
	switch op.Op {
	case "create-bucket":
		_, err := tx.CreateBucket(key)
		return err
	case "delete-bucket":
		return tx.DeleteBucket(key)
	}
	return fmt.Errorf("op %q needs a bucket path: the top level holds only buckets", op.Op)
}

// walk opens the nested bucket named by path (hex names).
func walk(tx *bolt.Tx, path []string) (*bolt.Bucket, error) {
	var b *bolt.Bucket
	for i, name := range path {
		key, err := unhex(name)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			b = tx.Bucket(key)
		} else {
			b = b.Bucket(key)
		}
		if b == nil {
			return nil, fmt.Errorf("no bucket %v", path[:i+1])
		}
	}
	return b, nil
}

// ---- churn

// cmdChurn commits N transactions to the bucket "churn". After every commit the
// bucket satisfies these invariants, which live-read tests check:
//
//	churn/gen  = G (decimal), one more than before the transaction
//	churn/n    = number of keys in churn/items; every value there starts "G:"
//	churn/items sequence = G
//	churn/nsub = number of buckets in churn/sub; each has gen = G and, when it
//	             holds a bucket "inner", inner/gen = G too
//
// Each transaction deletes, adds and rewrites keys, so bbolt frees and reuses
// pages all the time. Values are sometimes larger than a page (overflow pages)
// and sub-buckets are sometimes small enough to be inline.
func cmdChurn(args []string) error {
	fs := flag.NewFlagSet("churn", flag.ContinueOnError)
	pause := fs.Duration("pause", 0, "sleep between transactions")
	seed := fs.Int64("seed", 1, "random seed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("want: churn [-pause D] [-seed S] FILE N")
	}
	n, err := strconv.Atoi(fs.Arg(1))
	if err != nil {
		return fmt.Errorf("N: %w", err)
	}

	db, err := bolt.Open(fs.Arg(0), 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return fmt.Errorf("open %q: %w", fs.Arg(0), err)
	}
	defer db.Close()

	rng := rand.New(rand.NewSource(*seed))
	for i := 0; i < n; i++ {
		err := db.Update(func(tx *bolt.Tx) error { return churnOnce(tx, rng) })
		if err != nil {
			return fmt.Errorf("transaction %d: %w", i+1, err)
		}
		// Tell the test the file now holds a first consistent state.
		if i == 0 {
			fmt.Println("ready")
		}
		time.Sleep(*pause)
	}
	fmt.Println("done", n)
	return nil
}

func churnOnce(tx *bolt.Tx, rng *rand.Rand) error {
	c, err := tx.CreateBucketIfNotExists([]byte("churn"))
	if err != nil {
		return err
	}
	gen, _ := strconv.Atoi(string(c.Get([]byte("gen"))))
	gen++

	n, err := churnItems(c, rng, gen)
	if err != nil {
		return err
	}
	nsub, err := churnSubs(c, rng, gen)
	if err != nil {
		return err
	}
	for k, v := range map[string]int{"gen": gen, "n": n, "nsub": nsub} {
		if err := c.Put([]byte(k), []byte(strconv.Itoa(v))); err != nil {
			return err
		}
	}
	return nil
}

// churnItems drops about a tenth of the keys, adds some, rewrites the rest.
func churnItems(c *bolt.Bucket, rng *rand.Rand, gen int) (int, error) {
	items, err := c.CreateBucketIfNotExists([]byte("items"))
	if err != nil {
		return 0, err
	}
	keys := bucketKeys(items, false)
	for _, k := range keys {
		if rng.Intn(10) == 0 {
			if err := items.Delete(k); err != nil {
				return 0, err
			}
		}
	}
	for i := rng.Intn(400); i > 0; i-- {
		// A placeholder: a nil value would read back as a sub-bucket below.
		if err := items.Put(randomKey(rng), []byte("new")); err != nil {
			return 0, err
		}
	}

	// Rewrite every value so that all of them carry this generation.
	keys = bucketKeys(items, false)
	for _, k := range keys {
		if err := items.Put(k, itemValue(rng, gen)); err != nil {
			return 0, err
		}
	}
	return len(keys), items.SetSequence(uint64(gen))
}

// churnSubs deletes and creates sub-buckets, some inline and some not.
func churnSubs(c *bolt.Bucket, rng *rand.Rand, gen int) (int, error) {
	sub, err := c.CreateBucketIfNotExists([]byte("sub"))
	if err != nil {
		return 0, err
	}
	for _, k := range bucketKeys(sub, true) {
		if rng.Intn(4) == 0 {
			if err := sub.DeleteBucket(k); err != nil {
				return 0, err
			}
		}
	}
	for i := rng.Intn(4); i > 0; i-- {
		if _, err := sub.CreateBucketIfNotExists(randomKey(rng)); err != nil {
			return 0, err
		}
	}

	names := bucketKeys(sub, true)
	for _, k := range names {
		if err := churnSub(sub.Bucket(k), rng, gen); err != nil {
			return 0, err
		}
	}
	return len(names), nil
}

// churnSub stamps one sub-bucket with gen and grows or shrinks its filler.
func churnSub(b *bolt.Bucket, rng *rand.Rand, gen int) error {
	g := []byte(strconv.Itoa(gen))
	if err := b.Put([]byte("gen"), g); err != nil {
		return err
	}
	filler := make([]byte, rng.Intn(3)*rng.Intn(3000))
	if err := b.Put([]byte("filler"), filler); err != nil {
		return err
	}
	if rng.Intn(2) == 0 {
		if b.Bucket([]byte("inner")) == nil {
			return nil
		}
		return b.DeleteBucket([]byte("inner"))
	}
	inner, err := b.CreateBucketIfNotExists([]byte("inner"))
	if err != nil {
		return err
	}
	return inner.Put([]byte("gen"), g)
}

// bucketKeys lists the keys of b: sub-bucket names when buckets, else plain keys.
func bucketKeys(b *bolt.Bucket, buckets bool) [][]byte {
	var keys [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if (v == nil) == buckets {
			keys = append(keys, append([]byte(nil), k...))
		}
	}
	return keys
}

// randomKey returns 1..24 random bytes, '/' and 0x00 included.
func randomKey(rng *rand.Rand) []byte {
	key := make([]byte, 1+rng.Intn(24))
	rng.Read(key)
	return key
}

// itemValue is "G:" plus filler; one value in 50 spans several pages.
func itemValue(rng *rand.Rand, gen int) []byte {
	size := rng.Intn(120)
	if rng.Intn(50) == 0 {
		size = 4096 + rng.Intn(12000)
	}
	return append([]byte(strconv.Itoa(gen)+":"), make([]byte, size)...)
}

// ---- helpers

func update(path string, opts *bolt.Options, fn func(*bolt.Tx) error) error {
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		return fmt.Errorf("open %q: %w", path, err)
	}
	if err := db.Update(fn); err != nil {
		db.Close()
		return err
	}
	return db.Close()
}

func put(b *bolt.Bucket, hexKey, hexValue string) error {
	key, err := unhex(hexKey)
	if err != nil {
		return err
	}
	value, err := unhex(hexValue)
	if err != nil {
		return err
	}
	return b.Put(key, value)
}

func unhex(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not hex: %q: %w", s, err)
	}
	return b, nil
}

// readJSON decodes path ("-" for stdin) into v, refusing unknown fields.
func readJSON(path string, v interface{}) error {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}
