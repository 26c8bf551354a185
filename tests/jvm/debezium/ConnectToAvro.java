// Test harness (not product code): turns change records into what a Kafka Connect worker
// with an Avro converter would register and write for them: each key's and value's Connect
// schema as an Avro schema, and the value as Avro binary, through Kafka Connect's Avro
// translation (Apicurio Registry's AvroData, forked from Confluent's, with its defaults:
// connect.name/connect.version/connect.parameters kept as Avro properties).
//
//   java -cp '<debezium libs>/*:<avro-data libs>/*' ConnectToAvro.java <in.jsonl> <out.jsonl> [back]
//
// Each input line: {"topic", "key", "value"}, key and value as Kafka Connect's JsonConverter
// writes them with schemas.enable=true ({"schema", "payload"}, or null). Each output line, in
// input order: {"topic", "key_schema", "key", "value_schema", "value"}: the schemas as Avro
// schema JSON, the data as base64 Avro binary (no Confluent framing), null where the input
// had none. With `back`, the other way, as a sink with an Avro converter reads records: each
// input line is {"topic", "key_schema", "key", "value_schema", "value"} in that form, and each
// output line {"topic", "key", "value"} the Connect data AvroData gives, written by
// JsonConverter with schemas.enable=true. A record the converter refuses stops the harness
// (exit status 1, the error on stderr). Non-finite floats, which JsonConverter writes as text
// and reads back as 0.0, are restored from the input's payload, so the records carry what
// Debezium's own do.

import java.io.ByteArrayOutputStream;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Base64;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.connect.data.Field;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.json.JsonConverter;

import io.apicurio.registry.serde.avro.NonRecordContainer;
import io.apicurio.registry.utils.converter.avro.AvroData;
import io.apicurio.registry.utils.converter.avro.AvroDataConfig;

public class ConnectToAvro {

    /// The Connect value JsonConverter read from `payload`, with the non-finite floats it
    /// lost put back: JsonConverter writes NaN and ±Infinity as text ("NaN") but reads
    /// text as 0.0, so a record rebuilt from Debezium's JSON would carry 0 where Debezium's
    /// own record (converted to Avro directly) carries NaN.
    private static Object nonFinite(org.apache.kafka.connect.data.Schema schema, Object value, JsonNode payload) {
        if (schema == null || value == null || payload == null || payload.isNull()) {
            return value;
        }
        switch (schema.type()) {
            case FLOAT64:
            case FLOAT32:
                if (payload.isTextual()) {
                    double d = switch (payload.asText()) {
                        case "NaN" -> Double.NaN;
                        case "Infinity" -> Double.POSITIVE_INFINITY;
                        case "-Infinity" -> Double.NEGATIVE_INFINITY;
                        default -> 0.0;
                    };
                    return schema.type() == org.apache.kafka.connect.data.Schema.Type.FLOAT32 ? (Object) (float) d : (Object) d;
                }
                return value;
            case STRUCT:
                Struct struct = (Struct) value;
                for (Field field : schema.fields()) {
                    Object fixed = nonFinite(field.schema(), struct.get(field), payload.get(field.name()));
                    if (fixed != struct.get(field)) {
                        struct.put(field, fixed);
                    }
                }
                return struct;
            case ARRAY:
                @SuppressWarnings("unchecked")
                List<Object> items = (List<Object>) value;
                for (int i = 0; i < items.size() && i < payload.size(); i++) {
                    items.set(i, nonFinite(schema.valueSchema(), items.get(i), payload.get(i)));
                }
                return items;
            default:
                return value;
        }
    }

    /// A side of a record as Connect data, read by `converter` from its JSON.
    private static SchemaAndValue connect(JsonConverter converter, String topic, JsonNode node,
            ObjectMapper mapper) throws Exception {
        SchemaAndValue data = converter.toConnectData(topic, bytes(node, mapper));
        if (node == null || node.isNull() || data.schema() == null) {
            return data;
        }
        return new SchemaAndValue(data.schema(), nonFinite(data.schema(), data.value(), node.get("payload")));
    }

    private static byte[] bytes(JsonNode node, ObjectMapper mapper) throws Exception {
        return node == null || node.isNull() ? null : mapper.writeValueAsBytes(node);
    }

    /// Sets `<name>_schema` and `<name>` on `out` for one side of a record.
    private static void side(ObjectNode out, String name, SchemaAndValue data, AvroData avro,
            ObjectMapper mapper) throws Exception {
        if (data.schema() == null || data.value() == null) {
            out.putNull(name + "_schema");
            out.putNull(name);
            return;
        }
        Schema schema = avro.fromConnectSchema(data.schema());
        Object value = avro.fromConnectData(data.schema(), data.value());
        if (value instanceof NonRecordContainer container) {
            value = container.getValue();
        }
        ByteArrayOutputStream buffer = new ByteArrayOutputStream();
        BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(buffer, null);
        new GenericDatumWriter<Object>(schema).write(value, encoder);
        encoder.flush();
        out.set(name + "_schema", mapper.readTree(schema.toString()));
        out.put(name, Base64.getEncoder().encodeToString(buffer.toByteArray()));
    }

    /// One side of a record in Avro, as Connect data written by `converter` (JSON text, or
    /// "null" where there is none).
    private static String back(JsonNode schemaJson, JsonNode data, String topic, AvroData avro,
            JsonConverter converter) throws Exception {
        if (schemaJson == null || schemaJson.isNull() || data == null || data.isNull()) {
            return "null";
        }
        Schema schema = new Schema.Parser().parse(schemaJson.toString());
        byte[] bytes = Base64.getDecoder().decode(data.asText());
        Object value = new GenericDatumReader<Object>(schema)
                .read(null, DecoderFactory.get().binaryDecoder(bytes, null));
        SchemaAndValue connect = avro.toConnectData(schema, value);
        return new String(converter.fromConnectData(topic, connect.schema(), connect.value()),
                StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2 && !(args.length == 3 && args[2].equals("back"))) {
            System.err.println("usage: ConnectToAvro <in.jsonl> <out.jsonl> [back]");
            System.exit(64);
        }
        boolean toConnect = args.length == 3;
        ObjectMapper mapper = new ObjectMapper();
        JsonConverter keys = new JsonConverter();
        keys.configure(Map.of("schemas.enable", "true"), true);
        JsonConverter values = new JsonConverter();
        values.configure(Map.of("schemas.enable", "true"), false);
        AvroData avro = new AvroData(new AvroDataConfig(Map.of()));
        List<String> lines = Files.readAllLines(Path.of(args[0]), StandardCharsets.UTF_8);
        try (PrintWriter out = new PrintWriter(Files.newBufferedWriter(Path.of(args[1]), StandardCharsets.UTF_8))) {
            int index = 0;
            for (String line : lines) {
                JsonNode record = mapper.readTree(line);
                String topic = record.get("topic").asText();
                try {
                    if (toConnect) {
                        out.println("{\"topic\":" + mapper.writeValueAsString(topic)
                                + ",\"key\":" + back(record.get("key_schema"), record.get("key"), topic, avro, keys)
                                + ",\"value\":" + back(record.get("value_schema"), record.get("value"), topic, avro, values)
                                + "}");
                        index++;
                        continue;
                    }
                    ObjectNode result = mapper.createObjectNode();
                    result.put("topic", topic);
                    side(result, "key", connect(keys, topic, record.get("key"), mapper), avro, mapper);
                    side(result, "value", connect(values, topic, record.get("value"), mapper), avro, mapper);
                    out.println(mapper.writeValueAsString(result));
                } catch (Exception e) {
                    System.err.println("record " + index + " of " + topic + ": " + e);
                    e.printStackTrace();
                    System.exit(1);
                }
                index++;
            }
        }
    }
}
