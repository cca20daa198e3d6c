package web

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/bouncer/bouncer/store"
)

// field is one decoded field of a record, named by its JSON key (the
// name the API, exports and `bouncer query --json` use).
type field struct {
	Name  string
	Value string
}

// fields lists every non-empty field of rec, nested structs with a dotted
// prefix ("envelope.mail_from", "original.subject"). It walks the struct
// by reflection so that a field added to store.Record or parse's types
// shows up here without a change.
func fields(rec *store.Record) []field {
	var out []field
	walk(reflect.ValueOf(*rec), "", &out)
	return out
}

var timeType = reflect.TypeFor[time.Time]()

func walk(v reflect.Value, prefix string, out *[]field) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		fv := v.Field(i)
		if sf.Anonymous && fv.Kind() == reflect.Struct {
			walk(fv, prefix, out)
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		add(fv, prefix+name, out)
	}
}

func add(v reflect.Value, name string, out *[]field) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	switch {
	case v.Type() == timeType:
		if t := v.Interface().(time.Time); !t.IsZero() {
			*out = append(*out, field{name, t.UTC().Format(time.RFC3339Nano)})
		}
	case v.Kind() == reflect.Struct:
		walk(v, name+".", out)
	case v.Kind() == reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		for _, k := range keys {
			*out = append(*out, field{name + "." + fmt.Sprint(k), fmt.Sprint(v.MapIndex(k))})
		}
	case v.Kind() == reflect.Slice:
		if v.Len() == 0 {
			return
		}
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(v.Index(i))
		}
		*out = append(*out, field{name, strings.Join(parts, ", ")})
	case !v.IsZero():
		*out = append(*out, field{name, fmt.Sprint(v)})
	}
}
