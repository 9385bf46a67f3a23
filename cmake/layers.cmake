# The engine's libraries, one per layer: core (engine/ + kernels/) <- models/, data/ <- tasks/.
# Each layer's sources see only their own headers and those of the layers they link, through an
# include root of links made here (build/layers/<layer>/<dir> -> <source>/<dir>), so a lower layer
# including a higher one's header fails to compile: the layering is checked by every build.
function(hr_layer_includes target layer)
  set(root ${PROJECT_BINARY_DIR}/layers/${layer})
  foreach(entry ${ARGN})
    if(NOT EXISTS ${root}/${entry})
      get_filename_component(parent ${root}/${entry} DIRECTORY)
      file(MAKE_DIRECTORY ${parent})
      file(CREATE_LINK ${PROJECT_SOURCE_DIR}/${entry} ${root}/${entry} SYMBOLIC)
    endif()
  endforeach()
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${root}>
                                              $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/hrnet>)
endfunction()
