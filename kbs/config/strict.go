package config

import (
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

var durationType = reflect.TypeFor[Duration]()

func typeOf(ptr any) reflect.Type { return reflect.TypeOf(ptr).Elem() }

// checkShape checks a JSON document (decoded with UseNumber) against type
// t and records a problem, named by its path, for every unknown field,
// value of the wrong type and malformed duration. Field names must match
// the json tags exactly: encoding/json would also accept them in another
// case. null is accepted everywhere and means "absent".
//
// It handles the kinds this package's types use: structs, strings, bools,
// ints, float64s, slices and Duration.
func checkShape(ps *problems, t reflect.Type, v any, path string) {
	if v == nil {
		return
	}
	if t == durationType {
		s, ok := v.(string)
		if !ok {
			ps.add(path, `want a duration string such as "30s" or "5m", got %s (units are required)`, describe(v))
			return
		}
		if _, err := parseDuration(s); err != nil {
			ps.add(path, "%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			ps.add(path, "want a mapping of fields, got %s", describe(v))
			return
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			f, ok := fields[k]
			if !ok {
				msg := "unknown field"
				for name := range fields {
					if strings.EqualFold(name, k) {
						msg += " (did you mean " + strconv.Quote(name) + "?)"
					}
				}
				ps.add(join(path, k), "%s", msg)
				continue
			}
			checkShape(ps, f.Type, m[k], join(path, k))
		}
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			ps.add(path, "want a list, got %s", describe(v))
			return
		}
		for i, e := range l {
			checkShape(ps, t.Elem(), e, path+"["+strconv.Itoa(i)+"]")
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			msg := "want a string, got " + describe(v)
			if _, isBool := v.(bool); isBool {
				msg += " (YAML reads a bare yes, no, on, off, true or false as a boolean: quote the value)"
			}
			ps.add(path, "%s", msg)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			ps.add(path, "want true or false, got %s", describe(v))
		}
	case reflect.Int:
		n, ok := v.(json.Number)
		if !ok {
			ps.add(path, "want an integer, got %s", describe(v))
			return
		}
		if _, err := strconv.ParseInt(string(n), 10, strconv.IntSize); err != nil {
			ps.add(path, "want an integer, got %s", n)
		}
	case reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			ps.add(path, "want a number, got %s", describe(v))
			return
		}
		if f, err := n.Float64(); err != nil || math.IsInf(f, 0) {
			ps.add(path, "want a number, got %s", n)
		}
	default:
		ps.add(path, "unsupported field type %s", t)
	}
}

// jsonFields maps the json names of t's exported fields to the fields.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	fields := make(map[string]reflect.StructField, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		fields[name] = f
	}
	return fields
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// describe names the JSON type of v for messages.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return "the string " + strconv.Quote(v)
	case bool:
		return "the boolean " + strconv.FormatBool(v)
	case json.Number:
		return "the number " + string(v)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	default:
		return "null"
	}
}
