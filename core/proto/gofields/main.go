// Lists, for every field of the Kubernetes types kulisse serves, how Go's encoding/json
// writes it after a protobuf decode: which fields are inlined into their parent, which
// keep a zero value (pointers and fields without omitempty), and json names that differ.
package main

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

var seen = map[reflect.Type]bool{}
var lines []string

func protoName(t reflect.Type) string {
	return strings.ReplaceAll(t.PkgPath(), "/", ".") + "." + t.Name()
}

func walk(t reflect.Type) {
	for t.Kind() == reflect.Ptr || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] || t.PkgPath() == "time" {
		return
	}
	seen[t] = true
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		pb := f.Tag.Get("protobuf")
		js := f.Tag.Get("json")
		if pb == "" {
			continue
		}
		pname := ""
		for _, part := range strings.Split(pb, ",") {
			if strings.HasPrefix(part, "name=") {
				pname = strings.TrimPrefix(part, "name=")
			}
		}
		if pname == "" {
			pname = strings.ToLower(f.Name[:1]) + f.Name[1:]
		}
		jparts := strings.Split(js, ",")
		jname := jparts[0]
		omitempty := false
		inline := false
		for _, p := range jparts[1:] {
			if p == "omitempty" {
				omitempty = true
			}
			if p == "inline" {
				inline = true
			}
		}
		key := protoName(t) + "." + pname
		switch {
		case inline:
			lines = append(lines, key+" inline")
		case jname != pname && jname != "":
			lines = append(lines, key+" json="+jname)
		}
		ft := f.Type
		scalar := ft.Kind() == reflect.Ptr && ft.Elem().Kind() != reflect.Struct
		plain := ft.Kind() == reflect.String || ft.Kind() == reflect.Bool || (ft.Kind() >= reflect.Int && ft.Kind() <= reflect.Float64)
		if scalar || (plain && !omitempty && !inline) {
			lines = append(lines, key+" keepzero")
		}
		walk(f.Type)
	}
}

func main() {
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	_ = appsv1.AddToScheme(s)
	_ = coordinationv1.AddToScheme(s)
	_ = discoveryv1.AddToScheme(s)
	_ = rbacv1.AddToScheme(s)
	_ = authenticationv1.AddToScheme(s)
	_ = authorizationv1.AddToScheme(s)
	metav1.AddToGroupVersion(s, metav1.SchemeGroupVersion)
	for _, t := range s.AllKnownTypes() {
		walk(t)
	}
	walk(reflect.TypeOf(metav1.Status{}))
	walk(reflect.TypeOf(metav1.WatchEvent{}))
	sort.Strings(lines)
	lines = uniq(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
}

func uniq(in []string) []string {
	var out []string
	for i, l := range in {
		if i == 0 || in[i-1] != l {
			out = append(out, l)
		}
	}
	return out
}
