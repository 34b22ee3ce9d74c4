// A minimal mutating admission webhook in Go, standard library only: the floor the
// benchmark compares rollout-webhook with (docs/benchmarks.md).
//
// It answers the benchmark's conversion request with the same patch the product returns
// (the product's annotations on the Deployment, and replicas 0 on CREATE) and writes one
// hash-chained JSON line per decision to standard output before answering. It has no
// policy, no caches, no permission check and no writes: everything here is what any
// webhook must do (TLS, HTTP, parse the review, build and encode the patch, audit).
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
)

const (
	prefix   = "rollout-webhook.io/"
	maxBody  = 3 << 20
	genesis  = "0000000000000000000000000000000000000000000000000000000000000000"
	apiGroup = "admission.k8s.io/v1"
)

type review struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Request    *request `json:"request"`
}

type request struct {
	UID       string                 `json:"uid"`
	Operation string                 `json:"operation"`
	Namespace string                 `json:"namespace"`
	Name      string                 `json:"name"`
	Object    map[string]interface{} `json:"object"`
}

type operation struct {
	Op    string      `json:"op"`
	Path  string      `json:"path"`
	Value interface{} `json:"value"`
}

type auditTrail struct {
	mu   sync.Mutex
	prev string
	out  io.Writer
}

func (a *auditTrail) record(uid, decision string, patch []operation) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	line, err := json.Marshal(map[string]interface{}{
		"uid": uid, "decision": decision, "patch": patch, "prev": a.prev,
	})
	if err != nil {
		return err
	}
	sum := sha256.Sum256(line)
	a.prev = hex.EncodeToString(sum[:])
	_, err = a.out.Write(append(line, '\n'))
	return err
}

func stringAt(object map[string]interface{}, keys ...string) (map[string]interface{}, bool) {
	for _, key := range keys {
		next, ok := object[key].(map[string]interface{})
		if !ok {
			return nil, false
		}
		object = next
	}
	return object, true
}

// patchFor: the product's patch for an opted-in Deployment in a prod-* namespace.
func patchFor(req *request, policyVersion string) (string, []operation) {
	labels, _ := stringAt(req.Object, "metadata", "labels")
	if labels[prefix+"enabled"] != "true" {
		return "skip", nil
	}
	environment := "dev"
	if strings.HasPrefix(req.Namespace, "prod-") {
		environment = "prod"
	}
	replicas := 1.0
	if spec, ok := stringAt(req.Object, "spec"); ok {
		if count, ok := spec["replicas"].(float64); ok {
			replicas = count
		}
	}
	annotations := map[string]string{
		prefix + "rollout-name":        req.Name,
		prefix + "original-replicas":   strconv.Itoa(int(replicas)),
		prefix + "applied-environment": environment,
		prefix + "applied-strategy":    "canary",
		prefix + "policy-version":      policyVersion,
	}
	ops := []operation{{Op: "add", Path: "/metadata/annotations", Value: annotations}}
	if req.Operation == "CREATE" {
		ops = append(ops, operation{Op: "replace", Path: "/spec/replicas", Value: 0})
	}
	return "convert", ops
}

func refuse(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": message})
}

func mutate(trail *auditTrail, policyVersion string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			refuse(w, http.StatusRequestEntityTooLarge, err.Error())
			return
		}
		var in review
		if err := json.Unmarshal(body, &in); err != nil {
			refuse(w, http.StatusBadRequest, "not JSON: "+err.Error())
			return
		}
		if in.APIVersion != apiGroup || in.Kind != "AdmissionReview" || in.Request == nil {
			refuse(w, http.StatusBadRequest, "not an AdmissionReview v1")
			return
		}
		decision, ops := patchFor(in.Request, policyVersion)
		response := map[string]interface{}{
			"uid": in.Request.UID, "allowed": true,
			"auditAnnotations": map[string]string{"decision": decision},
		}
		if len(ops) > 0 {
			encoded, err := json.Marshal(ops)
			if err != nil {
				refuse(w, http.StatusInternalServerError, err.Error())
				return
			}
			response["patch"] = base64.StdEncoding.EncodeToString(encoded)
			response["patchType"] = "JSONPatch"
		}
		if err := trail.record(in.Request.UID, decision, ops); err != nil {
			refuse(w, http.StatusInternalServerError, "audit: "+err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]interface{}{
			"apiVersion": apiGroup, "kind": "AdmissionReview", "response": response,
		})
	}
}

func main() {
	address := flag.String("address", "127.0.0.1:8443", "host:port to listen on")
	certDir := flag.String("cert-dir", "", "directory with tls.crt and tls.key")
	policyVersion := flag.String("policy-version", "built-in", "the policy version annotation")
	flag.Parse()
	trail := &auditTrail{prev: genesis, out: os.Stdout}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mutate", mutate(trail, *policyVersion))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ready\n")
	})
	server := &http.Server{
		Addr:      *address,
		Handler:   mux,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
	}
	log.Fatal(server.ListenAndServeTLS(*certDir+"/tls.crt", *certDir+"/tls.key"))
}
