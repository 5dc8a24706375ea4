module github.com/iothub-go/iothub

go 1.26.0
