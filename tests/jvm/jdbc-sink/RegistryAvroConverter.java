// Test harness (not product code): a Kafka Connect converter that reads Confluent-framed
// Avro (magic byte 0, a 4-byte schema id, Avro binary) with the writer's schema fetched from
// a Confluent-compatible registry's REST API (GET /schemas/ids/{id}), and turns it into
// Connect data through Kafka Connect's Avro translation (Apicurio Registry's AvroData,
// forked from Confluent's, its defaults: connect.name, connect.version, connect.parameters
// give back the Connect schema's names, versions and parameters).
//
// It stands in for Confluent's AvroConverter, which Maven Central does not serve, on the
// reading side only: what it does besides AvroData is the wire framing and one HTTP GET per
// schema id. tests/debezium_jdbc_sink.rs compiles it with javac and runs Debezium's JDBC sink
// connector with it as the worker's key and value converter, on tidemark's Avro topics.
//
//   key.converter=dev.tidemark.tests.RegistryAvroConverter
//   key.converter.schema.registry.url=http://127.0.0.1:8081

package dev.tidemark.tests;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.storage.Converter;

import io.apicurio.registry.utils.converter.avro.AvroData;
import io.apicurio.registry.utils.converter.avro.AvroDataConfig;

public class RegistryAvroConverter implements Converter {

    private final HttpClient http = HttpClient.newHttpClient();
    private final ObjectMapper mapper = new ObjectMapper();
    private final Map<Integer, Schema> schemas = new ConcurrentHashMap<>();
    private String url;
    private AvroData avro;

    @Override
    public void configure(Map<String, ?> configs, boolean isKey) {
        Object url = configs.get("schema.registry.url");
        if (url == null) {
            throw new ConfigException("schema.registry.url is required");
        }
        this.url = url.toString().replaceAll("/+$", "");
        this.avro = new AvroData(new AvroDataConfig(Map.of()));
    }

    @Override
    public byte[] fromConnectData(String topic, org.apache.kafka.connect.data.Schema schema, Object value) {
        throw new DataException("RegistryAvroConverter only reads (a test harness for sinks)");
    }

    @Override
    public SchemaAndValue toConnectData(String topic, byte[] bytes) {
        if (bytes == null) {
            return SchemaAndValue.NULL;
        }
        ByteBuffer buffer = ByteBuffer.wrap(bytes);
        if (bytes.length < 5 || buffer.get() != 0) {
            throw new DataException("a record of " + topic + " is not Confluent-framed Avro (unknown magic byte)");
        }
        int id = buffer.getInt();
        Schema schema = schemas.computeIfAbsent(id, this::fetch);
        try {
            Object value = new GenericDatumReader<Object>(schema)
                    .read(null, DecoderFactory.get().binaryDecoder(bytes, 5, bytes.length - 5, null));
            return avro.toConnectData(schema, value);
        } catch (Exception e) {
            throw new DataException("a record of " + topic + " does not read with schema " + id + ": " + e, e);
        }
    }

    /// The schema registered under `id`, from the registry.
    private Schema fetch(int id) {
        try {
            HttpRequest request = HttpRequest.newBuilder(URI.create(url + "/schemas/ids/" + id)).GET().build();
            HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
            if (response.statusCode() != 200) {
                throw new DataException("the registry answered " + response.statusCode() + " for schema " + id
                        + ": " + response.body());
            }
            JsonNode body = mapper.readTree(response.body());
            return new Schema.Parser().parse(body.get("schema").asText());
        } catch (DataException e) {
            throw e;
        } catch (Exception e) {
            throw new DataException("fetching schema " + id + " from " + url + ": " + e, e);
        }
    }
}
