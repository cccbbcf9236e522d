package lanyard.client;

import com.azure.core.credential.AccessToken;
import com.azure.core.credential.TokenCredential;
import com.azure.core.credential.TokenRequestContext;
import com.azure.identity.ClientSecretCredentialBuilder;
import com.azure.identity.ManagedIdentityCredentialBuilder;
import com.azure.json.JsonProviders;
import com.azure.json.JsonReader;
import com.azure.json.JsonToken;
import com.azure.json.JsonWriter;
import java.io.IOException;
import java.io.StringWriter;
import java.util.List;
import java.util.Map;

/**
 * The real azure-identity, unmodified, as a test workload. Its one argument is a JSON array of cases; for
 * each it builds the credential the case names, asks for one token and prints one JSON line: {"token",
 * "expires_on"} or {"error", "message"}. Several cases share one JVM start.
 */
public final class Main {
    private Main() {
    }

    public static void main(String[] args) throws IOException {
        if (args.length != 1) {
            System.err.println("usage: lanyard.client.Main '[{\"credential\": \"managed-identity\", \"scope\": \"...\"}]'");
            System.exit(2);
        }
        List<Map<String, Object>> cases;
        try (JsonReader reader = JsonProviders.createReader(args[0])) {
            cases = reader.readArray(item -> item.currentToken() == JsonToken.START_OBJECT ? item.readMap(JsonReader::readUntyped) : null);
        }
        for (Map<String, Object> testCase : cases) {
            System.out.println(run(testCase == null ? Map.of() : testCase));
        }
        System.out.flush();
        // The HTTP client's non-daemon threads would keep the JVM alive for a while after the last case.
        System.exit(0);
    }

    private static String text(Map<String, Object> testCase, String name) {
        Object value = testCase.get(name);
        return value == null ? null : value.toString();
    }

    private static TokenCredential credentialFor(Map<String, Object> testCase) {
        String kind = String.valueOf(testCase.get("credential"));
        switch (kind) {
            case "managed-identity": {
                ManagedIdentityCredentialBuilder builder = new ManagedIdentityCredentialBuilder();
                if (text(testCase, "client_id") != null) {
                    builder.clientId(text(testCase, "client_id"));
                }
                if (text(testCase, "resource_id") != null) {
                    builder.resourceId(text(testCase, "resource_id"));
                }
                if (text(testCase, "object_id") != null) {
                    builder.objectId(text(testCase, "object_id"));
                }
                return builder.build();
            }
            case "client-secret":
                // The secret comes from the environment, never the command line (other users can read that).
                return new ClientSecretCredentialBuilder()
                    .authorityHost(text(testCase, "authority"))
                    .tenantId(text(testCase, "tenant_id"))
                    .clientId(text(testCase, "client_id"))
                    .clientSecret(System.getenv("AZURE_CLIENT_SECRET"))
                    .disableInstanceDiscovery()
                    .build();
            default:
                throw new IllegalArgumentException("unknown credential " + kind + " (managed-identity, client-secret)");
        }
    }

    /** The message and its causes': azure-identity wraps what the endpoint answered in an inner exception. */
    private static String describe(Throwable failure) {
        StringBuilder text = new StringBuilder(String.valueOf(failure.getMessage()));
        for (Throwable cause = failure.getCause(); cause != null && cause != cause.getCause(); cause = cause.getCause()) {
            text.append(" <- ").append(cause.getClass().getSimpleName()).append(": ").append(cause.getMessage());
        }
        return text.toString();
    }

    private static String run(Map<String, Object> testCase) throws IOException {
        StringWriter out = new StringWriter();
        try (JsonWriter json = JsonProviders.createWriter(out)) {
            json.writeStartObject();
            try {
                TokenCredential credential = credentialFor(testCase);
                TokenRequestContext request = new TokenRequestContext().addScopes(text(testCase, "scope"));
                AccessToken token = credential.getTokenSync(request);
                json.writeStringField("token", token.getToken());
                json.writeLongField("expires_on", token.getExpiresAt().toEpochSecond());
            } catch (RuntimeException failure) {
                json.writeStringField("error", failure.getClass().getSimpleName());
                json.writeStringField("message", describe(failure));
            }
            json.writeEndObject();
        }
        return out.toString();
    }
}
