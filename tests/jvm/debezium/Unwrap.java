// Test harness (not product code): passes change records through Debezium's own
// ExtractNewRecordState transform (the "unwrap" SMT, default settings), as a Kafka Connect
// sink with that transform would read them.
//
//   java -cp '<libs>/*' Unwrap.java <in.jsonl> <out.jsonl>
//
// Each input line: {"topic", "key", "value"}, key and value as Kafka Connect's JsonConverter
// writes them with schemas.enable=true ({"schema", "payload"}, or null). Each output line,
// in input order: {"topic", "key", "value"} after the transform, written back the same way,
// or {"topic", "dropped": true} when the transform dropped the record. A record the
// converter or the transform refuses stops the harness (exit status 1, the error on stderr).

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.io.PrintWriter;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.json.JsonConverter;
import org.apache.kafka.connect.source.SourceRecord;

import io.debezium.transforms.ExtractNewRecordState;

public class Unwrap {

    private static byte[] bytes(JsonNode node, ObjectMapper mapper) throws Exception {
        return node == null || node.isNull() ? null : mapper.writeValueAsBytes(node);
    }

    private static String text(byte[] bytes) {
        return bytes == null ? "null" : new String(bytes, StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: Unwrap <in.jsonl> <out.jsonl>");
            System.exit(64);
        }
        ObjectMapper mapper = new ObjectMapper();
        JsonConverter keys = new JsonConverter();
        keys.configure(Map.of("schemas.enable", "true"), true);
        JsonConverter values = new JsonConverter();
        values.configure(Map.of("schemas.enable", "true"), false);
        ExtractNewRecordState<SourceRecord> unwrap = new ExtractNewRecordState<>();
        unwrap.configure(Map.of());
        List<String> lines = Files.readAllLines(Path.of(args[0]), StandardCharsets.UTF_8);
        try (PrintWriter out = new PrintWriter(Files.newBufferedWriter(Path.of(args[1]), StandardCharsets.UTF_8))) {
            int index = 0;
            for (String line : lines) {
                JsonNode record = mapper.readTree(line);
                String topic = record.get("topic").asText();
                try {
                    SchemaAndValue key = keys.toConnectData(topic, bytes(record.get("key"), mapper));
                    SchemaAndValue value = values.toConnectData(topic, bytes(record.get("value"), mapper));
                    SourceRecord in = new SourceRecord(Map.of(), Map.of(), topic, 0,
                            key.schema(), key.value(), value.schema(), value.value());
                    SourceRecord result = unwrap.apply(in);
                    String quoted = mapper.writeValueAsString(topic);
                    if (result == null) {
                        out.println("{\"topic\":" + quoted + ",\"dropped\":true}");
                    } else {
                        out.println("{\"topic\":" + quoted
                                + ",\"key\":" + text(keys.fromConnectData(topic, result.keySchema(), result.key()))
                                + ",\"value\":" + text(values.fromConnectData(topic, result.valueSchema(), result.value()))
                                + "}");
                    }
                } catch (RuntimeException e) {
                    System.err.println("record " + index + " of " + topic + ": " + e);
                    e.printStackTrace();
                    System.exit(1);
                }
                index++;
            }
        }
        unwrap.close();
    }
}
