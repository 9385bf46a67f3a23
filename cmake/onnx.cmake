# ONNX export (hrnet-export, docs/EXPORT.md): the hrnet_export library (engine/export/onnx.cpp,
# the protobuf side of the ops' ONNX translations, and tasks/export.cpp, the model-level export),
# built when ONNX (Debian's libonnx-dev: the ONNX protobuf schema, onnx::checker, shape
# inference) and Protobuf are found. HR_ONNX: AUTO (when found), ON (required), OFF. The
# hrnet-export program, test_onnx_export and the runtime checks exist only when it is built
# (if(TARGET hrnet_export)).
set(HR_ONNX "AUTO" CACHE STRING "Build the ONNX export: AUTO (when ONNX and Protobuf are found), ON, OFF")
set_property(CACHE HR_ONNX PROPERTY STRINGS AUTO ON OFF)
set(HR_WITH_ONNX OFF)
if(NOT HR_ONNX STREQUAL "OFF")
  if(HR_ONNX STREQUAL "ON")
    find_package(Protobuf REQUIRED)
    find_package(ONNX REQUIRED)
  else()
    find_package(Protobuf QUIET)
    if(Protobuf_FOUND)
      find_package(ONNX QUIET)
    endif()
  endif()
  if(Protobuf_FOUND AND ONNX_FOUND AND TARGET onnx)
    set(HR_WITH_ONNX ON)
    # seen from every directory (the tests read exported models back with the ONNX protobuf)
    set_target_properties(onnx onnx_proto protobuf::libprotobuf PROPERTIES IMPORTED_GLOBAL TRUE)
  endif()
endif()
message(STATUS "hrnet: ONNX export ${HR_WITH_ONNX}")
if(HR_WITH_ONNX)
  add_library(hrnet_export STATIC ${PROJECT_SOURCE_DIR}/engine/export/onnx.cpp
                                  ${PROJECT_SOURCE_DIR}/tasks/export.cpp)
  add_library(hrnet::export ALIAS hrnet_export)
  target_link_libraries(hrnet_export PUBLIC hrnet_tasks
                        PRIVATE onnx onnx_proto protobuf::libprotobuf $<BUILD_INTERFACE:hr_warnings>)
  target_compile_definitions(hrnet_export PRIVATE HR_VERSION="${PROJECT_VERSION}")
endif()
