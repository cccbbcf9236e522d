// Command lanyard-go-client runs the real azidentity, unmodified, as a test workload. Its one argument is
// a JSON array of cases; for each it builds the credential the case names, asks for one token and prints
// one JSON line: {"token", "expires_on"} or {"error", "message"}.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

type testCase struct {
	Credential string `json:"credential"`
	Scope      string `json:"scope"`
	ClientID   string `json:"client_id"`
	ResourceID string `json:"resource_id"`
	ObjectID   string `json:"object_id"`
}

type outcome struct {
	Token     string `json:"token,omitempty"`
	ExpiresOn int64  `json:"expires_on,omitempty"`
	Error     string `json:"error,omitempty"`
	Message   string `json:"message,omitempty"`
}

func credentialFor(c testCase) (azcore.TokenCredential, error) {
	switch c.Credential {
	case "managed-identity":
		options := &azidentity.ManagedIdentityCredentialOptions{}
		selectors := 0
		if c.ClientID != "" {
			options.ID, selectors = azidentity.ClientID(c.ClientID), selectors+1
		}
		if c.ResourceID != "" {
			options.ID, selectors = azidentity.ResourceID(c.ResourceID), selectors+1
		}
		if c.ObjectID != "" {
			options.ID, selectors = azidentity.ObjectID(c.ObjectID), selectors+1
		}
		if selectors > 1 {
			return nil, fmt.Errorf("name at most one of client_id, resource_id, object_id")
		}
		return azidentity.NewManagedIdentityCredential(options)
	default:
		return nil, fmt.Errorf("unknown credential %q (this program knows managed-identity)", c.Credential)
	}
}

func run(c testCase) outcome {
	credential, err := credentialFor(c)
	if err != nil {
		return outcome{Error: "CredentialUnavailable", Message: err.Error()}
	}
	// Longer than azcore's IMDS retries take on a refusal, so a refusal reports itself instead of a timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	token, err := credential.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{c.Scope}})
	if err != nil {
		return outcome{Error: fmt.Sprintf("%T", err), Message: err.Error()}
	}
	return outcome{Token: token.Token, ExpiresOn: token.ExpiresOn.Unix()}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, `usage: lanyard-go-client '[{"credential": "managed-identity", "scope": "...", "client_id": "..."}]'`)
		os.Exit(2)
	}
	var cases []testCase
	if err := json.Unmarshal([]byte(os.Args[1]), &cases); err != nil {
		fmt.Fprintln(os.Stderr, "the argument is not a JSON array of cases:", err)
		os.Exit(2)
	}
	encoder := json.NewEncoder(os.Stdout)
	for _, c := range cases {
		if err := encoder.Encode(run(c)); err != nil {
			os.Exit(1)
		}
	}
}
