"""gateway/schema.py: which JSON body keys each REST binding accepts, read from a descriptor set."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from gateway import schema
from gateway.render import REPO_ROOT

PROTO = """
syntax = "proto3";
package test.v1;

import "google/api/annotations.proto";
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

service Library {
  rpc CreateBook(CreateBookRequest) returns (Book) {
    option (google.api.http) = {
      post: "/v1/shelves/{shelf}/books"
      body: "*"
      additional_bindings {put: "/v1/shelves/{shelf}/books:import" body: "book"}
    };
  }
  rpc GetBook(GetBookRequest) returns (Book) {
    option (google.api.http) = {get: "/v1/{name=shelves/*/books/*}"};
  }
  rpc UpdateBook(UpdateBookRequest) returns (Book) {
    option (google.api.http) = {patch: "/v1/{book.name=shelves/*/books/*}" body: "book"};
  }
  rpc TagBook(TagBookRequest) returns (Book) {
    option (google.api.http) = {custom: {kind: "TAG" path: "/v1/books/{id}"} body: "labels"};
  }
  rpc RenameBook(RenameBookRequest) returns (Book) {
    option (google.api.http) = {post: "/v1/books/{id}:rename" body: "new_name"};
  }
  rpc ImportChapters(ImportChaptersRequest) returns (Book) {
    option (google.api.http) = {post: "/v1/books/{id}/chapters:batch" body: "chapters"};
  }
  rpc GetLatest(CreateBookRequest) returns (Book) {
    option (google.api.http) = {post: "/v1/shelves/latest/books" body: "*"};
  }
  rpc Ping(google.protobuf.Empty) returns (google.protobuf.Empty) {
    option (google.api.http) = {post: "/v1/ping" body: "*"};
  }
  rpc Internal(CreateBookRequest) returns (Book);
}

service NotTranscoded {
  rpc Hidden(Secret) returns (Book) {
    option (google.api.http) = {post: "/v1/hidden" body: "*"};
  }
}

message Book {
  enum Kind {
    KIND_UNSPECIFIED = 0;
    NOVEL = 1;
  }
  message Paper {
    int32 page_count = 1;
  }
  string name = 1;
  string display_name = 2;
  Author author = 3;
  repeated Chapter chapters = 4;
  map<string, Chapter> chapter_index = 5;
  google.protobuf.Struct metadata = 6;
  google.protobuf.Timestamp published_at = 7;
  google.protobuf.Duration reading_time = 8;
  google.protobuf.Any extra = 9;
  google.protobuf.FieldMask update_mask = 10;
  google.protobuf.Int32Value edition = 11;
  oneof format {
    Paper paper = 12;
    string ebook_url = 13;
  }
  Book sequel = 14;
  string isbn_13 = 15 [json_name = "ISBN"];
  repeated string tags = 16;
  Kind kind = 17;
  google.protobuf.Value rating = 18;
  google.protobuf.ListValue reviews = 19;
}
message Author { string full_name = 1; }
message Chapter {
  string title = 1;
  repeated Chapter sections = 2;
}
message CreateBookRequest {
  string shelf = 1;
  Book book = 2;
  string request_id = 3;
}
message GetBookRequest { string name = 1; }
message UpdateBookRequest { Book book = 1; }
message TagBookRequest {
  string id = 1;
  map<string, string> labels = 2;
}
message RenameBookRequest {
  string id = 1;
  string new_name = 2;
}
message ImportChaptersRequest {
  string id = 1;
  repeated Chapter chapters = 2;
}
message Secret { string password = 1; }
"""

BOOK = "test.v1.Book"
SERVICES = ["test.v1.Library"]


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    """PROTO compiled the way `make protos` compiles the real ones (--include_imports)."""
    root = tmp_path_factory.mktemp("protos")
    (root / "test" / "v1").mkdir(parents=True)
    (root / "test" / "v1" / "library.proto").write_text(PROTO)
    out = root / "library.pb"
    well_known = resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"-I{root}",
            f"-I{REPO_ROOT / 'protos'}",
            f"-I{well_known}",
            f"--descriptor_set_out={out}",
            "--include_imports",
            "test/v1/library.proto",
        ]
    )
    assert status == 0, "protoc failed"
    return schema.load(out)


@pytest.fixture(scope="module")
def built(descriptor_set: descriptor_pb2.FileDescriptorSet) -> schema.Schema:
    return schema.build(descriptor_set, SERVICES)


def routes(built: schema.Schema) -> set[tuple[str, str, str]]:
    return {(route.method, route.template, route.message) for route in built.routes}


# ------------------------------------------------------------------ routes
def test_only_bindings_with_a_message_body_are_checked(built: schema.Schema) -> None:
    assert routes(built) == {
        ("POST", "/v1/shelves/{shelf}/books", "test.v1.CreateBookRequest"),
        ("PUT", "/v1/shelves/{shelf}/books:import", BOOK),  # body: "book"
        ("PATCH", "/v1/{book.name=shelves/*/books/*}", BOOK),
        ("POST", "/v1/books/{id}/chapters:batch", "test.v1.Chapter"),  # repeated message
        ("POST", "/v1/shelves/latest/books", "test.v1.CreateBookRequest"),
        ("POST", "/v1/ping", "google.protobuf.Empty"),
    }
    # Not there: GET without a body, a map body (TagBook), a scalar body (RenameBook), an RPC
    # without google.api.http, and a service the transcoder does not serve.


def test_rpc_names_are_kept_for_the_reader(built: schema.Schema) -> None:
    by_template = {route.template: route.rpc for route in built.routes}
    assert by_template["/v1/ping"] == "test.v1.Library.Ping"


def test_literal_paths_come_before_the_templates_they_also_match(built: schema.Schema) -> None:
    templates = [route.template for route in built.routes]
    assert templates.index("/v1/shelves/latest/books") < templates.index(
        "/v1/shelves/{shelf}/books"
    )


# ------------------------------------------------------------------ accepted keys
def test_fields_are_accepted_by_proto_name_and_json_name(built: schema.Schema) -> None:
    keys = built.messages["test.v1.CreateBookRequest"]
    assert keys == {
        "shelf": None,
        "book": BOOK,
        "request_id": None,
        "requestId": None,
    }


def test_a_custom_json_name_replaces_the_lower_camel_one(built: schema.Schema) -> None:
    keys = built.messages[BOOK]
    assert keys["isbn_13"] is None
    assert keys["ISBN"] is None
    assert "isbn13" not in keys


def test_nested_messages_are_checked_below_their_field(built: schema.Schema) -> None:
    book = built.messages[BOOK]
    assert book["author"] == "test.v1.Author"
    assert built.messages["test.v1.Author"] == {"full_name": None, "fullName": None}


def test_oneof_members_are_plain_fields(built: schema.Schema) -> None:
    book = built.messages[BOOK]
    assert book["paper"] == "test.v1.Book.Paper"  # a nested type, by its full name
    assert book["ebook_url"] is None
    assert book["ebookUrl"] is None
    assert "format" not in book  # the oneof's own name is no JSON key
    assert built.messages["test.v1.Book.Paper"] == {"page_count": None, "pageCount": None}


def test_repeated_messages_are_checked_per_element(built: schema.Schema) -> None:
    assert built.messages[BOOK]["chapters"] == "test.v1.Chapter"
    assert built.messages[BOOK]["tags"] is None  # repeated scalars: anything


def test_recursive_messages_refer_to_themselves(built: schema.Schema) -> None:
    assert built.messages[BOOK]["sequel"] == BOOK
    assert built.messages["test.v1.Chapter"]["sections"] == "test.v1.Chapter"


def test_maps_and_well_known_types_accept_anything(built: schema.Schema) -> None:
    book = built.messages[BOOK]
    for key in (
        "chapter_index",
        "chapterIndex",
        "metadata",  # Struct
        "published_at",  # Timestamp
        "reading_time",  # Duration
        "extra",  # Any
        "update_mask",  # FieldMask
        "edition",  # Int32Value
        "rating",  # Value
        "reviews",  # ListValue
        "kind",  # enum
    ):
        assert book[key] is None, key
    for name in built.messages:
        assert not name.endswith("Entry"), f"map entry {name} has a schema"
        assert name == "google.protobuf.Empty" or not name.startswith("google."), name


def test_empty_accepts_no_key(built: schema.Schema) -> None:
    assert built.messages["google.protobuf.Empty"] == {}


def test_only_reachable_messages_are_listed(built: schema.Schema) -> None:
    assert "test.v1.Secret" not in built.messages  # NotTranscoded's request
    assert "test.v1.GetBookRequest" not in built.messages  # no body


# ------------------------------------------------------------------ JSON types
def test_each_key_has_the_json_type_of_its_field(built: schema.Schema) -> None:
    kinds = built.kinds[BOOK]
    assert kinds["name"] == kinds["displayName"] == "string"
    assert kinds["author"] == "message"
    assert kinds["chapters"] == "message[]"  # a list of checked objects
    assert kinds["chapter_index"] == "map"  # an object, though repeated entries in the proto
    assert kinds["tags"] == "string[]"
    assert kinds["kind"] == "enum"
    assert kinds["ISBN"] == "string"
    for key in ("metadata", "published_at", "reading_time", "extra", "update_mask", "edition"):
        assert kinds[key] == "any", key  # their own JSON forms
    assert built.kinds["test.v1.Book.Paper"] == {"page_count": "int32", "pageCount": "int32"}


def test_enum_value_names_are_listed(built: schema.Schema) -> None:
    assert built.enums["test.v1.Book.Kind"] == ("KIND_UNSPECIFIED", "NOVEL")


# ------------------------------------------------------------------ every binding's path
def test_every_binding_is_listed_with_its_path_variables(built: schema.Schema) -> None:
    paths = {(p.method, p.template): (p.pattern, p.variables, p.has_body) for p in built.paths}
    assert paths[("GET", "/v1/{name=shelves/*/books/*}")] == (
        "^/v1/(shelves/[^/]+/books/[^/]+)$",
        ("name",),
        False,
    )
    assert paths[("POST", "/v1/books/{id}:rename")] == ("^/v1/books/([^/]+):rename$", ("id",), True)
    assert paths[("PATCH", "/v1/{book.name=shelves/*/books/*}")][1] == ("book.name",)
    assert ("POST", "/v1/hidden") not in paths  # a service the transcoder does not serve


def test_the_real_protos_have_typed_keys_and_every_route() -> None:
    real = schema.build(
        schema.load(REPO_ROOT / "gen" / "descriptors" / "catalytic.pb"),
        ["catalytic.lattice.v1.LatticeService", "catalytic.webhook.v1.WebhookService"],
    )
    assert real.kinds["catalytic.lattice.v1.CreateLatticeRequest"]["dimensions"] == "int32"
    assert real.kinds["catalytic.lattice.v1.RandomFill"]["seed"] == "uint64"
    assert real.kinds["catalytic.lattice.v1.ConstantFill"]["value"] == "float"
    assert real.kinds["catalytic.webhook.v1.CreateWebhookRequest"]["ordered"] == "bool"
    resend = next(p for p in real.paths if p.template.endswith("/resend"))
    assert resend.variables == ("id", "delivery_id")


def test_an_unknown_body_field_is_an_error(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    broken = descriptor_pb2.FileDescriptorSet()
    broken.CopyFrom(descriptor_set)
    library = next(f for f in broken.file if f.package == "test.v1").service[0]
    rule = library.method[0].options.Extensions[annotations_pb2.http]
    rule.additional_bindings[0].body = "no_such_field"
    with pytest.raises(schema.SchemaError, match="no_such_field"):
        schema.build(broken, SERVICES)


def test_the_real_protos(built: schema.Schema) -> None:
    real = schema.build(
        schema.load(REPO_ROOT / "gen" / "descriptors" / "catalytic.pb"),
        ["catalytic.lattice.v1.LatticeService"],
    )
    create = real.messages["catalytic.lattice.v1.CreateLatticeRequest"]
    assert create["random"] == "catalytic.lattice.v1.RandomFill"
    assert create["values"] is None
    assert "dimension" not in create
    fill = real.messages["catalytic.lattice.v1.RandomFill"]
    assert fill["blocked_fraction"] is None
    assert fill["blockedFraction"] is None
    assert {(r.method, r.pattern) for r in real.routes} == {
        ("POST", "^/v1/lattices$"),
        ("POST", "^/v1/lattices/create$"),
        ("POST", "^/v1/lattices/[^/]+/transform$"),
    }


# ------------------------------------------------------------------ helpers
@pytest.mark.parametrize(
    ("proto_name", "expected"),
    [
        ("name", "name"),
        ("tenant_name", "tenantName"),
        ("axis_a", "axisA"),
        ("isbn_13", "isbn13"),
        ("foo__bar", "fooBar"),
        ("_private", "Private"),
        ("trailing_", "trailing"),
    ],
)
def test_json_name_is_protocs(proto_name: str, expected: str) -> None:
    assert schema.json_name(proto_name) == expected


@pytest.mark.parametrize(
    ("template", "pattern"),
    [
        ("/v1/lattices", "^/v1/lattices$"),
        ("/v1/lattices/{id}/transform", "^/v1/lattices/[^/]+/transform$"),
        ("/v1/api-keys/{id}", "^/v1/api%-keys/[^/]+$"),
        ("/.well-known/jwks.json", "^/%.well%-known/jwks%.json$"),
        ("/v1/{name=shelves/*/books/*}", "^/v1/shelves/[^/]+/books/[^/]+$"),
        ("/v1/{name=files/**}", "^/v1/files/.*$"),
        ("/v1/*/books", "^/v1/[^/]+/books$"),
        ("/v1/books/{id}:rename", "^/v1/books/[^/]+:rename$"),
        ("/v1/shelves/{shelf}/books:import", "^/v1/shelves/[^/]+/books:import$"),
    ],
)
def test_lua_patterns_of_path_templates(template: str, pattern: str) -> None:
    assert schema.lua_pattern(template) == pattern


@pytest.mark.parametrize("template", ["v1/books", "/v1//books"])
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(schema.SchemaError):
        schema.lua_pattern(template)


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("name", '"name"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak", '"line\\010break"'),
        ("é", '"\\195\\169"'),
        ("\x001", '"\\0001"'),  # three digits always: the 1 after it stays a 1
    ],
)
def test_lua_string_literals(text: str, literal: str) -> None:
    assert schema.lua_string(text) == literal


def test_the_lua_table(built: schema.Schema) -> None:
    text = schema.to_lua(built)
    lines = text.splitlines()
    assert lines[0] == "{"
    assert lines[-1] == "}"
    assert (
        '    {"POST", "^/v1/shelves/[^/]+/books$", "test.v1.CreateBookRequest"},'
        "  -- test.v1.Library.CreateBook"
    ) in lines
    assert (
        '    ["test.v1.Author"] = {["fullName"] = true, ["full_name"] = true},' in lines
    )  # true: anything is accepted below the key
    assert '    ["google.protobuf.Empty"] = {},' in lines
    assert '["sequel"] = "test.v1.Book"' in text


def test_schema_is_deterministic(descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
    first = schema.to_lua(schema.build(descriptor_set, SERVICES))
    assert schema.to_lua(schema.build(descriptor_set, SERVICES)) == first


def test_load_reads_a_file(
    tmp_path: Path, descriptor_set: descriptor_pb2.FileDescriptorSet
) -> None:
    path = tmp_path / "set.pb"
    path.write_bytes(descriptor_set.SerializeToString())
    assert schema.load(path) == descriptor_set
