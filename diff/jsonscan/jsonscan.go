// Package jsonscan finds members, array elements and value ends in JSON that
// is already known to be valid, without decoding it: the byte scanners
// behind the hot paths of diff (a task's raw logs), poller (a page's tasks)
// and store (reading stored events). It is an internal helper of this
// module, not an API for downstream code: it matches brackets and quotes
// and does not validate.
package jsonscan

import (
	"bytes"
	"encoding/json"
)

// Member finds the top-level member key of the JSON object obj, which
// must be valid JSON (it was decoded before). It returns the span
// [start, end) to cut so that the object stays valid without the member
// (the member with one adjacent comma), and, when the member's value is an
// array, the spans of its elements. ok is false when the member is absent
// or obj is not an object; keys written with escapes are not matched.
func Member(obj []byte, key string) (start, end int, elems [][2]int, ok bool) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return 0, 0, nil, false
	}
	i++
	prevEnd := i // end of the previous member (after its value), or after '{'
	first := true
	for {
		i = skipSpace(obj, i)
		if i >= len(obj) || obj[i] == '}' {
			return 0, 0, nil, false
		}
		if obj[i] == ',' {
			i = skipSpace(obj, i+1)
		}
		memberStart := i
		keyEnd := skipString(obj, i)
		if keyEnd < 0 {
			return 0, 0, nil, false
		}
		match := keyEnd-i == len(key)+2 && string(obj[i+1:keyEnd-1]) == key
		i = skipSpace(obj, keyEnd)
		if i >= len(obj) || obj[i] != ':' {
			return 0, 0, nil, false
		}
		i = skipSpace(obj, i+1)
		valStart := i
		valEnd := skipValue(obj, i)
		if valEnd < 0 {
			return 0, 0, nil, false
		}
		if match {
			if obj[valStart] == '[' {
				elems = arrayElems(obj[:valEnd], valStart)
			}
			if first {
				// cut the member and the comma after it, if any
				j := skipSpace(obj, valEnd)
				if j < len(obj) && obj[j] == ',' {
					return memberStart, skipSpace(obj, j+1), elems, true
				}
				return memberStart, valEnd, elems, true
			}
			// cut the comma before it
			return prevEnd, valEnd, elems, true
		}
		first = false
		prevEnd = valEnd
		i = valEnd
	}
}

// RawMember returns the raw value of the top-level member key of the JSON
// object obj, which must be valid JSON.
func RawMember(obj []byte, key string) (json.RawMessage, bool) {
	start, end, _, ok := Member(obj, key)
	if !ok {
		return nil, false
	}
	member := obj[start:end]
	i := skipString(member, skipSpace(member, skipComma(member)))
	if i < 0 {
		return nil, false
	}
	i = skipSpace(member, i)
	if i >= len(member) || member[i] != ':' {
		return nil, false
	}
	i = skipSpace(member, i+1)
	j := skipValue(member, i)
	if j < 0 {
		return nil, false
	}
	return member[i:j:j], true
}

// RawElements returns the elements of the JSON array arr, which must be
// valid JSON; nil if arr is not an array.
func RawElements(arr []byte) []json.RawMessage {
	i := skipSpace(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return nil
	}
	spans := arrayElems(arr, i)
	out := make([]json.RawMessage, len(spans))
	for k, e := range spans {
		out[k] = arr[e[0]:e[1]:e[1]]
	}
	return out
}

func skipComma(b []byte) int {
	i := skipSpace(b, 0)
	if i < len(b) && b[i] == ',' {
		return i + 1
	}
	return i
}

// ValueEnd returns the index just after the JSON value that starts at b[i],
// or -1 if there is none. b must be valid JSON, as stored events are: the
// scan matches brackets and quotes without validating.
func ValueEnd(b []byte, i int) int { return skipValue(b, i) }

// arrayElems returns the spans of the elements of the array at b[i].
func arrayElems(b []byte, i int) [][2]int {
	var out [][2]int
	i = skipSpace(b, i+1)
	for i < len(b) && b[i] != ']' {
		if b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		end := skipValue(b, i)
		if end < 0 {
			return nil
		}
		out = append(out, [2]int{i, end})
		i = skipSpace(b, end)
	}
	return out
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i], or -1.
func skipString(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for i++; i < len(b); {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		end := i + j
		// the quote ends the string unless an odd number of backslashes
		// stand right before it
		bs := 0
		for k := end - 1; k >= i && b[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			return end + 1
		}
		i = end + 1
	}
	return -1
}

// skipValue returns the index after the JSON value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				j := skipString(b, i)
				if j < 0 {
					return -1
				}
				i = j - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\n', '\t', '\r':
			return i
		}
	}
	return i
}
